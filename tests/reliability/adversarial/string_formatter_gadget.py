# expect: policy module-attribute-not-allowed: string.Formatter
# why: string.Formatter does field access
# ruff: noqa  (deliberately hostile code: data for the policy, never run)
import string
from core.mechanism import Mechanism


class S(Mechanism):
    def guidance(self, ctx):
        return string.Formatter().vformat('{0.__class__}', (self,), {})
