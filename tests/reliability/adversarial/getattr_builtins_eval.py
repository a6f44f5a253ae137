# expect: policy dunder-name: __builtins__
# why: eval fetched from __builtins__
# ruff: noqa  (deliberately hostile code: data for the policy, never run)
from core.mechanism import Mechanism


class Ev(Mechanism):
    def guidance(self, ctx):
        return getattr(__builtins__, 'eval')('1')
