# expect: policy contract: exactly one Mechanism subclass
# why: two candidates, so which one runs is ambiguous
# ruff: noqa  (deliberately hostile code: data for the policy, never run)
from core.mechanism import Mechanism


class A(Mechanism):
    pass


class B(Mechanism):
    pass
