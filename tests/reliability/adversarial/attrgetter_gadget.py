# expect: policy module-attribute-not-allowed: operator.attrgetter
# why: attrgetter turns a string into attribute access
import operator
from core.mechanism import Mechanism


class A(Mechanism):
    def guidance(self, ctx):
        return operator.attrgetter('__class__')(self)
