# expect: policy dunder-method: __del__
# why: __del__ runs outside any deadline when the mechanism is detached
from core.mechanism import Mechanism


class D(Mechanism):
    seen = 0

    def observe(self, record):
        D.seen += 1

    def __del__(self):
        while D.seen > 1:
            pass
