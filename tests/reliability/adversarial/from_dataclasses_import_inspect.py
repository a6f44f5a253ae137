# expect: policy module-attribute-not-allowed: dataclasses.inspect
# why: a forbidden module imported by name from an allowed one
# ruff: noqa  (deliberately hostile code: data for the policy, never run)
from dataclasses import inspect
from core.mechanism import Mechanism


class I(Mechanism):
    pass
