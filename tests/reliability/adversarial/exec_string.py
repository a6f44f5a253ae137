# expect: policy forbidden-builtin: exec
# why: exec of generated text
from core.mechanism import Mechanism


class X(Mechanism):
    def guidance(self, ctx):
        exec('import os')
