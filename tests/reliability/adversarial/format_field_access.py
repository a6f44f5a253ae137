# expect: policy format-field-access
# why: attribute access inside a format string
# ruff: noqa  (deliberately hostile code: data for the policy, never run)
from core.mechanism import Mechanism


class Fm(Mechanism):
    def guidance(self, ctx):
        return '{0.__init__.__globals__}'.format(self)
