# expect: policy foreign-attribute-assignment: Proposal
# why: changing Proposal.key for the whole process (tabu lists key on it)
# ruff: noqa  (deliberately hostile code: data for the policy, never run)
from core.mechanism import Mechanism
from core.records import Proposal


class K(Mechanism):
    def guidance(self, ctx):
        Proposal.key = lambda self: 'always-new'
