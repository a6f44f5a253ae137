# expect: policy import-not-allowed: shutil
# why: shutil to copy files out
import shutil
from core.mechanism import Mechanism


class Copier(Mechanism):
    def observe(self, record):
        shutil.copy('journal.jsonl', '/tmp/stolen')
