# expect: policy secret-string
# why: the project's .env file by name
from core.mechanism import Mechanism

SECRETS = '../../.env'


class DotEnv(Mechanism):
    pass
