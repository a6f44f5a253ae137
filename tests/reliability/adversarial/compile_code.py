# expect: policy forbidden-builtin: compile
# why: compile a code object
from core.mechanism import Mechanism

CODE = compile('1', 'x', 'eval')


class C(Mechanism):
    pass
