# expect: policy secret-string
# why: the project's .env file by name
# ruff: noqa  (deliberately hostile code: data for the policy, never run)
from core.mechanism import Mechanism

SECRETS = '../../.env'


class DotEnv(Mechanism):
    pass
