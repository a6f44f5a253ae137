# expect: policy forbidden-builtin: vars
# why: vars() of an allowed module
# ruff: noqa  (deliberately hostile code: data for the policy, never run)
import random
from core.mechanism import Mechanism


class V(Mechanism):
    def guidance(self, ctx):
        return vars(random)['_os']
