# expect: policy foreign-attribute-assignment: json
# why: rewriting how the controller serialises its journal
# ruff: noqa  (deliberately hostile code: data for the policy, never run)
import json
from core.mechanism import Mechanism

json.dumps = lambda *a, **k: '{}'


class J(Mechanism):
    pass
