# expect: policy dynamic-attribute: getattr
# why: getattr with a computed name
import random
from core.mechanism import Mechanism


class Dyn(Mechanism):
    def guidance(self, ctx):
        return getattr(random, '_' + 'os')
