# expect: policy import-not-allowed: importlib
# why: importlib of a forbidden module
import importlib
from core.mechanism import Mechanism


class Il(Mechanism):
    def guidance(self, ctx):
        importlib.import_module('subprocess').run(['id'])
