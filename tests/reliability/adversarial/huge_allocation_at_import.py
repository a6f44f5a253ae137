# expect: contract import-failed
# why: 8 GiB allocated at import (the check child's address space is capped)
# ruff: noqa  (deliberately hostile code: data for the policy, never run)
from core.mechanism import Mechanism

BLOB = bytearray(8 * 1024 ** 3)


class Big(Mechanism):
    pass
