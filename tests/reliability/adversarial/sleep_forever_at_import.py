# expect: contract timeout
# why: a module that sleeps instead of importing
import time
from core.mechanism import Mechanism

time.sleep(10 ** 6)


class S(Mechanism):
    pass
