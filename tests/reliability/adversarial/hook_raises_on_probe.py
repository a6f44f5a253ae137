# expect: contract hook-raised: filter
# why: a filter that raises on the first candidate
from core.mechanism import Mechanism


class F(Mechanism):
    def filter(self, proposal, ctx):
        return {}['missing']
