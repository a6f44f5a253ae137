# expect: contract timeout
# why: a module that never finishes importing
from core.mechanism import Mechanism

while True:
    pass


class L(Mechanism):
    pass
