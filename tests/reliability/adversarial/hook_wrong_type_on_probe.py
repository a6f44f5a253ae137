# expect: contract hook-return-type: decide
# why: decide() answers an int, not a bool
from core.mechanism import Mechanism


class D(Mechanism):
    def decide(self, record, ctx):
        return 1
