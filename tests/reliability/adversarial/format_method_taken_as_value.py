# expect: policy dynamic-format
# why: str.format taken as a value so the call site is hidden
# ruff: noqa  (deliberately hostile code: data for the policy, never run)
import random
from core.mechanism import Mechanism

LEAK = '{0.__globals__[random]._os.__dict__[environ]}'.format


class Fm(Mechanism):
    pass
