# expect: policy type-as-value
# why: the pydantic metaclass fetched with type(cls)
# ruff: noqa  (deliberately hostile code: data for the policy, never run)
from core.mechanism import Mechanism
from core.records import Proposal

Meta = type(Proposal)


class M(Mechanism):
    pass
