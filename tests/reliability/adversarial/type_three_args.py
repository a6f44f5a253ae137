# expect: policy dynamic-class
# why: type(name, bases, ns) builds a pydantic class with runtime annotations
# ruff: noqa  (deliberately hostile code: data for the policy, never run)
from core.mechanism import Mechanism
from core.records import Proposal

T = '__imp' + "ort__('os').system('id') or int"
P = type('P', (Proposal,), {'__annotations__': {'x': T}})


class M(Mechanism):
    pass
