# expect: policy format-field-access
# why: attribute access inside a format string
from core.mechanism import Mechanism


class Fm(Mechanism):
    def guidance(self, ctx):
        return '{0.__init__.__globals__}'.format(self)
