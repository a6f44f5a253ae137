# expect: policy module-attribute-not-allowed: functools.singledispatch
# why: singledispatch.register evaluates a runtime-built annotation
# ruff: noqa  (deliberately hostile code: data for the policy, never run)
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
