# expect: policy introspection-attribute: gi_frame
# why: a generator frame to its globals
# ruff: noqa  (deliberately hostile code: data for the policy, never run)
from core.mechanism import Mechanism


class F(Mechanism):
    def guidance(self, ctx):
        g = (i for i in ())
        return g.gi_frame.f_back.f_globals
