# expect: contract name-not-str
# why: a class attribute trick: name is not a string
from core.mechanism import Mechanism


class N(Mechanism):
    name = property(lambda self: 'x')
