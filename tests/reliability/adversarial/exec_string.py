# expect: policy forbidden-builtin: exec
# why: exec of generated text
# ruff: noqa  (deliberately hostile code: data for the policy, never run)
from core.mechanism import Mechanism


class X(Mechanism):
    def guidance(self, ctx):
        exec('import os')
