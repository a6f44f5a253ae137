# expect: policy contract: exactly one Mechanism subclass
# why: two candidates, so which one runs is ambiguous
from core.mechanism import Mechanism


class A(Mechanism):
    pass


class B(Mechanism):
    pass
