# expect: contract hook-raised: filter
# why: a filter that raises on the first candidate
# ruff: noqa  (deliberately hostile code: data for the policy, never run)
from core.mechanism import Mechanism


class F(Mechanism):
    def filter(self, proposal, ctx):
        return {}['missing']
