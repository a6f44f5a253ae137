# expect: policy import-not-allowed: marshal
# why: marshal to smuggle a code object
# ruff: noqa  (deliberately hostile code: data for the policy, never run)
import marshal
from core.mechanism import Mechanism


class Mar(Mechanism):
    pass
