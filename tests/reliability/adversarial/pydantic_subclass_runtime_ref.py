# expect: policy base-not-allowed: core.records.Proposal
# why: a pydantic subclass whose annotation is built at run time
# ruff: noqa  (deliberately hostile code: data for the policy, never run)
from core.mechanism import Mechanism
from core.records import Proposal

T = '__imp' + "ort__('os').system('id') or int"


class P(Proposal):
    x: T = 0


class M(Mechanism):
    pass
