# expect: policy forbidden-builtin: open
# why: a write outside the run directory
# ruff: noqa  (deliberately hostile code: data for the policy, never run)
from core.mechanism import Mechanism


class Writer(Mechanism):
    def observe(self, record):
        with open('/tmp/bilevel-pwned', 'w') as fh:
            fh.write('x')
