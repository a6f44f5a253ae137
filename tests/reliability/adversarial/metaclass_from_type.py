# expect: policy type-as-value
# why: the pydantic metaclass fetched with type(cls)
from core.mechanism import Mechanism
from core.records import Proposal

Meta = type(Proposal)


class M(Mechanism):
    pass
