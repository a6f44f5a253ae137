# expect: policy dunder-attribute: __traceback__
# why: a traceback's frame to the caller's globals
# ruff: noqa  (deliberately hostile code: data for the policy, never run)
from core.mechanism import Mechanism


class T(Mechanism):
    def guidance(self, ctx):
        try:
            1 / 0
        except ZeroDivisionError as exc:
            return exc.__traceback__.tb_frame.f_back.f_globals
