# expect: policy module-attribute-not-allowed: dataclasses.inspect
# why: a forbidden module imported by name from an allowed one
from dataclasses import inspect
from core.mechanism import Mechanism


class I(Mechanism):
    pass
