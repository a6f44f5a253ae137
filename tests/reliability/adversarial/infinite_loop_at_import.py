# expect: contract timeout
# why: a module that never finishes importing
# ruff: noqa  (deliberately hostile code: data for the policy, never run)
from core.mechanism import Mechanism

while True:
    pass


class L(Mechanism):
    pass
