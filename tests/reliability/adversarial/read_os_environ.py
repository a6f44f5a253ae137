# expect: policy import-not-allowed: os
# why: API keys from os.environ
# ruff: noqa  (deliberately hostile code: data for the policy, never run)
from os import environ
from core.mechanism import Mechanism


class Env(Mechanism):
    def guidance(self, ctx):
        return environ.get('OPENAI_KEY')
