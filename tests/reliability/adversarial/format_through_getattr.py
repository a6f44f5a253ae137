# expect: policy dynamic-format
# why: format fetched with getattr and a literal name
# ruff: noqa  (deliberately hostile code: data for the policy, never run)
from core.mechanism import Mechanism

LEAK = getattr('{0.__init__.__globals__}', 'format')


class Fm(Mechanism):
    pass
