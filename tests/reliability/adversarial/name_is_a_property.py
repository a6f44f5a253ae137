# expect: contract name-not-str
# why: a class attribute trick: name is not a string
# ruff: noqa  (deliberately hostile code: data for the policy, never run)
from core.mechanism import Mechanism


class N(Mechanism):
    name = property(lambda self: 'x')
