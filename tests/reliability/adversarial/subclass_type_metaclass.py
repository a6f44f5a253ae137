# expect: policy base-not-allowed: type
# why: a metaclass of one's own
# ruff: noqa  (deliberately hostile code: data for the policy, never run)
from core.mechanism import Mechanism


class Meta(type):
    pass


class M(Mechanism):
    pass
