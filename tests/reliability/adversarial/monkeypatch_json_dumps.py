# expect: policy foreign-attribute-assignment: json
# why: rewriting how the controller serialises its journal
import json
from core.mechanism import Mechanism

json.dumps = lambda *a, **k: '{}'


class J(Mechanism):
    pass
