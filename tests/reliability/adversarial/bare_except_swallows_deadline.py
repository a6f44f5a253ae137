# expect: policy bare-except
# why: a bare except that swallows the hook deadline
# ruff: noqa  (deliberately hostile code: data for the policy, never run)
from core.mechanism import Mechanism

import time


class Sw(Mechanism):
    def guidance(self, ctx):
        while True:
            try:
                time.sleep(1)
            except:
                pass
