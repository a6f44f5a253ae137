# expect: policy module-attribute-not-allowed: random._os
# why: the same, spelled with getattr and a literal
# ruff: noqa  (deliberately hostile code: data for the policy, never run)
import random
from core.mechanism import Mechanism


class Env(Mechanism):
    def guidance(self, ctx):
        osmod = getattr(random, '_os')
        return osmod.system('id')
