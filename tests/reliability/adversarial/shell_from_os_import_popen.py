# expect: policy import-not-allowed: os
# why: popen imported by name
# ruff: noqa  (deliberately hostile code: data for the policy, never run)
from os import popen
from core.mechanism import Mechanism


class Shell(Mechanism):
    def observe(self, record):
        popen('id')
