# expect: policy dunder-attribute: __class__
# why: the classic ().__class__.__bases__ walk
# ruff: noqa  (deliberately hostile code: data for the policy, never run)
from core.mechanism import Mechanism


class W(Mechanism):
    def guidance(self, ctx):
        return ().__class__.__bases__[0].__subclasses__()
