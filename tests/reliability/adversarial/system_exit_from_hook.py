# expect: policy base-exception: SystemExit
# why: stopping the whole run from a hook
# ruff: noqa  (deliberately hostile code: data for the policy, never run)
from core.mechanism import Mechanism


class Q(Mechanism):
    def observe(self, record):
        if record.iteration > 3:
            raise SystemExit(0)
