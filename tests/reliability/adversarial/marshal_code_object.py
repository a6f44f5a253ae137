# expect: policy import-not-allowed: marshal
# why: marshal to smuggle a code object
import marshal
from core.mechanism import Mechanism


class Mar(Mechanism):
    pass
