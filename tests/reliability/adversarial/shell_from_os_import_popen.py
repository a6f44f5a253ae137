# expect: policy import-not-allowed: os
# why: popen imported by name
from os import popen
from core.mechanism import Mechanism


class Shell(Mechanism):
    def observe(self, record):
        popen('id')
