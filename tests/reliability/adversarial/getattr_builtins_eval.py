# expect: policy dunder-name: __builtins__
# why: eval fetched from __builtins__
from core.mechanism import Mechanism


class Ev(Mechanism):
    def guidance(self, ctx):
        return getattr(__builtins__, 'eval')('1')
