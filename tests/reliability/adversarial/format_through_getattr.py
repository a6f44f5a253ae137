# expect: policy dynamic-format
# why: format fetched with getattr and a literal name
from core.mechanism import Mechanism

LEAK = getattr('{0.__init__.__globals__}', 'format')


class Fm(Mechanism):
    pass
