# expect: contract import-failed
# why: unbounded recursion when the module is imported
# ruff: noqa  (deliberately hostile code: data for the policy, never run)
from core.mechanism import Mechanism


def down(n):
    return down(n + 1)


DEPTH = down(0)


class R(Mechanism):
    pass
