# expect: policy introspection-attribute: model_config
# why: unfreezing every record in the process
# ruff: noqa  (deliberately hostile code: data for the policy, never run)
from core.mechanism import Mechanism
from core.records import TrialRecord


class U(Mechanism):
    def guidance(self, ctx):
        config = TrialRecord.model_config
        config.update(frozen=False)
