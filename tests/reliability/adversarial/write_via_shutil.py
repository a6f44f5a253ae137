# expect: policy import-not-allowed: shutil
# why: shutil to copy files out
# ruff: noqa  (deliberately hostile code: data for the policy, never run)
import shutil
from core.mechanism import Mechanism


class Copier(Mechanism):
    def observe(self, record):
        shutil.copy('journal.jsonl', '/tmp/stolen')
