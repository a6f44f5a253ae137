# expect: policy dunder-method: __init_subclass__
# why: code that runs when someone subclasses
# ruff: noqa  (deliberately hostile code: data for the policy, never run)
from core.mechanism import Mechanism


class S(Mechanism):
    def __init_subclass__(cls, **kw):
        pass
