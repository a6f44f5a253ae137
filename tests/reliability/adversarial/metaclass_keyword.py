# expect: policy metaclass
# why: a metaclass on the mechanism
# ruff: noqa  (deliberately hostile code: data for the policy, never run)
from core.mechanism import Mechanism
import enum


class M(Mechanism, metaclass=enum.EnumMeta):
    pass
