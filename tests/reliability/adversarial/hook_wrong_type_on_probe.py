# expect: contract hook-return-type: decide
# why: decide() answers an int, not a bool
# ruff: noqa  (deliberately hostile code: data for the policy, never run)
from core.mechanism import Mechanism


class D(Mechanism):
    def decide(self, record, ctx):
        return 1
