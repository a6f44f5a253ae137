# expect: policy introspection-attribute: mro
# why: a pydantic base fished out of mro()
# ruff: noqa  (deliberately hostile code: data for the policy, never run)
from core.mechanism import Mechanism
from core.records import Proposal

B = Proposal.mro()[2]


class M(Mechanism):
    pass
