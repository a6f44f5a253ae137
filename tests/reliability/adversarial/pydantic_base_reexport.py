# expect: policy module-attribute-not-allowed: core.records.BaseModel
# why: pydantic itself through a project module
# ruff: noqa  (deliberately hostile code: data for the policy, never run)
from core.records import BaseModel
from core.mechanism import Mechanism


class B(Mechanism):
    pass
