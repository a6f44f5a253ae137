# expect: policy import-not-allowed: subprocess
# why: a shell-out through subprocess
import subprocess
from core.mechanism import Mechanism


class Shell(Mechanism):
    def observe(self, record):
        subprocess.run(['rm', '-rf', '/'])
