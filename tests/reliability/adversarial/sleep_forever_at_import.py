# expect: contract timeout
# why: a module that sleeps instead of importing
# ruff: noqa  (deliberately hostile code: data for the policy, never run)
import time
from core.mechanism import Mechanism

time.sleep(10 ** 6)


class S(Mechanism):
    pass
