# expect: policy module-attribute-not-allowed: functools.singledispatch
# why: singledispatch.register evaluates a runtime-built annotation
from core.mechanism import Mechanism
import functools

T = '__imp' + "ort__('os').system('id') or int"


@functools.singledispatch
def f(x):
    return 0


def g(x: T):
    return 1


f.register(g)


class Sd(Mechanism):
    pass
