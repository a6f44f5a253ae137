# expect: policy dunder-method: __str__
# why: an exception whose str() never returns, formatted outside the deadline
# ruff: noqa  (deliberately hostile code: data for the policy, never run)
from core.mechanism import Mechanism


class Boom(Exception):
    def __str__(self):
        while True:
            pass


class B(Mechanism):
    def observe(self, record):
        if record.iteration > 2:
            raise Boom()
