# expect: policy module-attribute-not-allowed: random._os
# why: os reached through an allowed module's private attribute
# ruff: noqa  (deliberately hostile code: data for the policy, never run)
import random
from core.mechanism import Mechanism


class Env(Mechanism):
    def guidance(self, ctx):
        return random._os.environ
