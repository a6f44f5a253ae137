# expect: policy base-not-allowed: B
# why: a base that is a variable, not a class name
# ruff: noqa  (deliberately hostile code: data for the policy, never run)
from core.mechanism import Mechanism
from core.records import Proposal

B = [Proposal][0]


class P(B):
    x: int = 0


class M(Mechanism):
    pass
