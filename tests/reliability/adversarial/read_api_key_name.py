# expect: policy secret-string
# why: a key's variable name as a string
from core.mechanism import Mechanism

NAME = 'DEEPSEEK_API_KEY'


class Key(Mechanism):
    pass
