# expect: policy secret-string
# why: a key's variable name as a string
# ruff: noqa  (deliberately hostile code: data for the policy, never run)
from core.mechanism import Mechanism

NAME = 'DEEPSEEK_API_KEY'


class Key(Mechanism):
    pass
