# expect: policy metaclass
# why: a metaclass on the mechanism
from core.mechanism import Mechanism
import enum


class M(Mechanism, metaclass=enum.EnumMeta):
    pass
