# expect: policy dunder-method: __del__
# why: __del__ runs outside any deadline when the mechanism is detached
# ruff: noqa  (deliberately hostile code: data for the policy, never run)
from core.mechanism import Mechanism


class D(Mechanism):
    seen = 0

    def observe(self, record):
        D.seen += 1

    def __del__(self):
        while D.seen > 1:
            pass
