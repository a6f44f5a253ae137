# expect: policy dunder-method: __getattribute__
# why: attribute lookups that hang once outside the probe
# ruff: noqa  (deliberately hostile code: data for the policy, never run)
from core.mechanism import Mechanism


class G(Mechanism):
    def __getattribute__(self, name):
        return object.__getattribute__(self, name)
