# expect: policy import-not-allowed: ctypes
# why: ctypes into libc
# ruff: noqa  (deliberately hostile code: data for the policy, never run)
import ctypes
from core.mechanism import Mechanism


class C(Mechanism):
    def guidance(self, ctx):
        ctypes.CDLL(None).system(b'id')
