# expect: policy import-not-allowed: importlib
# why: importlib of a forbidden module
# ruff: noqa  (deliberately hostile code: data for the policy, never run)
import importlib
from core.mechanism import Mechanism


class Il(Mechanism):
    def guidance(self, ctx):
        importlib.import_module('subprocess').run(['id'])
