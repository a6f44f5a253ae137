# expect: policy forbidden-builtin: __import__
# why: code hidden in a string annotation (typing and pydantic evaluate them)
# ruff: noqa  (deliberately hostile code: data for the policy, never run)
from core.mechanism import Mechanism
from core.mechanism import Mechanism as Base


class Sneaky(Base):
    label: "__import__('os').system('id') or str" = ''
