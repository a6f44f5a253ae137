# expect: policy module-attribute-not-allowed: typing.get_type_hints
# why: get_type_hints evaluates strings
# ruff: noqa  (deliberately hostile code: data for the policy, never run)
from typing import get_type_hints
from core.mechanism import Mechanism


class G(Mechanism):
    pass
