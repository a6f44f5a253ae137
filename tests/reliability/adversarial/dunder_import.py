# expect: policy forbidden-builtin: __import__
# why: __import__ of a forbidden module
# ruff: noqa  (deliberately hostile code: data for the policy, never run)
from core.mechanism import Mechanism


class Imp(Mechanism):
    def guidance(self, ctx):
        __import__('os').system('id')
