# expect: policy dunder-method: __init_subclass__
# why: code that runs when someone subclasses
from core.mechanism import Mechanism


class S(Mechanism):
    def __init_subclass__(cls, **kw):
        pass
