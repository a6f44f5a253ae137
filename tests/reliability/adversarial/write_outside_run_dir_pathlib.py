# expect: policy import-not-allowed: pathlib
# why: pathlib as a way to write files
# ruff: noqa  (deliberately hostile code: data for the policy, never run)
from pathlib import Path
from core.mechanism import Mechanism


class Writer(Mechanism):
    def observe(self, record):
        Path('/tmp/bilevel-pwned').write_text('x')
