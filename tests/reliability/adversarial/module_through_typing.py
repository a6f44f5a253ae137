# expect: policy module-attribute-not-allowed: typing.sys
# why: sys reached through typing
# ruff: noqa  (deliberately hostile code: data for the policy, never run)
import typing
from core.mechanism import Mechanism


class T(Mechanism):
    def guidance(self, ctx):
        return typing.sys.modules['os']
