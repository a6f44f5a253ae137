# expect: policy forbidden-builtin: eval
# why: eval taken as a value
from core.mechanism import Mechanism

RUN = eval


class E(Mechanism):
    pass
