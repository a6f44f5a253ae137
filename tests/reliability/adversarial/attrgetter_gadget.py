# expect: policy module-attribute-not-allowed: operator.attrgetter
# why: attrgetter turns a string into attribute access
# ruff: noqa  (deliberately hostile code: data for the policy, never run)
import operator
from core.mechanism import Mechanism


class A(Mechanism):
    def guidance(self, ctx):
        return operator.attrgetter('__class__')(self)
