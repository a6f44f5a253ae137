# expect: policy introspection-attribute: mro
# why: a pydantic base fished out of mro()
from core.mechanism import Mechanism
from core.records import Proposal

B = Proposal.mro()[2]


class M(Mechanism):
    pass
