# expect: policy forbidden-builtin: compile
# why: compile a code object
# ruff: noqa  (deliberately hostile code: data for the policy, never run)
from core.mechanism import Mechanism

CODE = compile('1', 'x', 'eval')


class C(Mechanism):
    pass
