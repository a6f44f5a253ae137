# expect: policy import-not-allowed: os
# why: API keys from os.environ
from os import environ
from core.mechanism import Mechanism


class Env(Mechanism):
    def guidance(self, ctx):
        return environ.get('OPENAI_KEY')
