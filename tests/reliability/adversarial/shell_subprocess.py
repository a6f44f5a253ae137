# expect: policy import-not-allowed: subprocess
# why: a shell-out through subprocess
# ruff: noqa  (deliberately hostile code: data for the policy, never run)
import subprocess
from core.mechanism import Mechanism


class Shell(Mechanism):
    def observe(self, record):
        subprocess.run(['rm', '-rf', '/'])
