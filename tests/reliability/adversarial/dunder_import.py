# expect: policy forbidden-builtin: __import__
# why: __import__ of a forbidden module
from core.mechanism import Mechanism


class Imp(Mechanism):
    def guidance(self, ctx):
        __import__('os').system('id')
