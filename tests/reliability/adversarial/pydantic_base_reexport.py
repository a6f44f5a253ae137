# expect: policy module-attribute-not-allowed: core.records.BaseModel
# why: pydantic itself through a project module
from core.records import BaseModel
from core.mechanism import Mechanism


class B(Mechanism):
    pass
