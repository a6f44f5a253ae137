# expect: policy module-attribute-not-allowed: dataclasses.make_dataclass
# why: make_dataclass with a pydantic base evaluates the field type
# ruff: noqa  (deliberately hostile code: data for the policy, never run)
import dataclasses
from core.mechanism import Mechanism
from core.records import Proposal

T = '__imp' + "ort__('os').system('id') or int"
X = dataclasses.make_dataclass('X', [('a', T)], bases=(Proposal,))


class Md(Mechanism):
    pass
