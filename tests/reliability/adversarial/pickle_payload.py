# expect: policy import-not-allowed: pickle
# why: pickle.loads of a payload
# ruff: noqa  (deliberately hostile code: data for the policy, never run)
import pickle
from core.mechanism import Mechanism


class P(Mechanism):
    def guidance(self, ctx):
        pickle.loads(b'cos\nsystem\n(S\'id\'\ntR.')
