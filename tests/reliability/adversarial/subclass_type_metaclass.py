# expect: policy base-not-allowed: type
# why: a metaclass of one's own
from core.mechanism import Mechanism


class Meta(type):
    pass


class M(Mechanism):
    pass
