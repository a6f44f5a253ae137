"""What a user and the Level-2 designer are told about an inconclusive design: not "reverted" — it is
tried again in the next cycle (the progress line, the design prompt's list of designs tried)."""

from __future__ import annotations

import pytest

from core.level2 import design_verdict
from core.records import REPLICATE, Proposal, Status, TrialRecord
from domains.script_opt.cli import record_line as script_line
from domains.train_opt.cli import record_line as train_line
from domains.train_opt.design_prompt import verdict


def _design(status: Status, decision: str | None, *, retest: bool = False) -> TrialRecord:
    info = {"decision": {"verdict": decision}} if decision else {}
    if retest:
        info["replicate_of"] = 1
    proposal = Proposal(changes={"template": "surrogate"}, payload="src", region="template:surrogate",
                        origin=REPLICATE if retest else "designer")
    return TrialRecord(loop="mechanism", iteration=2 if retest else 1, cycle=2 if retest else 1, proposal=proposal,
                       status=status, score=0.0, metrics={"gain": 0.0, "parent_gain": 0.0}, info=info)


@pytest.mark.parametrize(("record", "said", "line", "prompt"), [
    (_design(Status.DISCARD, "retest"), "retest", "inconclusive: retest next cycle", "tried again in the next cycle"),
    (_design(Status.DISCARD, "discard"), "reverted", "reverted", "reverted"),
    (_design(Status.DISCARD, "discard", retest=True), "reverted", "reverted", "reverted"),
    (_design(Status.KEEP, "keep", retest=True), "kept", "kept", "kept"),
    (_design(Status.CRASH, None), "crash", "crash", "failed (crash)"),
])
def test_an_inconclusive_design_is_shown_as_retested_not_reverted(record, said, line, prompt):
    assert design_verdict(record) == said
    for render in (train_line, script_line):
        assert line in render("mechanism", record)
    assert prompt in verdict(record)
    if said == "retest":
        assert "reverted" not in train_line("mechanism", record) and "reverted" not in verdict(record)
