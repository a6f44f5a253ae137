# expect: policy forbidden-builtin: eval
# why: eval taken as a value
# ruff: noqa  (deliberately hostile code: data for the policy, never run)
from core.mechanism import Mechanism

RUN = eval


class E(Mechanism):
    pass
