# expect: policy dynamic-attribute: getattr
# why: getattr with a computed name
# ruff: noqa  (deliberately hostile code: data for the policy, never run)
import random
from core.mechanism import Mechanism


class Dyn(Mechanism):
    def guidance(self, ctx):
        return getattr(random, '_' + 'os')
