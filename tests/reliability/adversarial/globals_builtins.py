# expect: policy forbidden-builtin: globals
# why: globals() to reach __builtins__
# ruff: noqa  (deliberately hostile code: data for the policy, never run)
from core.mechanism import Mechanism


class Glob(Mechanism):
    def guidance(self, ctx):
        return globals()['__builtins__']['eval']('1')
