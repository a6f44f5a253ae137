# expect: policy foreign-attribute-assignment: math
# why: math.isfinite patched so a NaN trial looks finite
# ruff: noqa  (deliberately hostile code: data for the policy, never run)
import math
from core.mechanism import Mechanism


class N(Mechanism):
    def guidance(self, ctx):
        setattr(math, 'isfinite', lambda x: True)
