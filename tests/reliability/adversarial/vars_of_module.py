# expect: policy forbidden-builtin: vars
# why: vars() of an allowed module
import random
from core.mechanism import Mechanism


class V(Mechanism):
    def guidance(self, ctx):
        return vars(random)['_os']
