# expect: policy dynamic-format
# why: format_map on a template built at run time
# ruff: noqa  (deliberately hostile code: data for the policy, never run)
from core.mechanism import Mechanism


class Fm(Mechanism):
    def guidance(self, ctx):
        template = '{x.' + '__class__}'
        return template.format_map({'x': self})
