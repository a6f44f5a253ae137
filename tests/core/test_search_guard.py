"""Level 1.5 never freezes a parameter whose direction of change was never measured: the freeze is
dropped, and the untried direction becomes guidance for the proposer."""

from __future__ import annotations

from core.records import Proposal, Status, TrialRecord
from core.search import ConfigPatch, apply_patch, guard_patch, initial_config, untried_directions


def rec(i: int, region: str, status: Status = Status.DISCARD) -> TrialRecord:
    changes = {part.split(":")[0]: 1 for part in region.split("+")}
    return TrialRecord(loop="inner", iteration=i, status=status, score=1.0, proposal=Proposal(changes=changes, region=region))


def test_untried_directions_are_read_from_the_measured_regions() -> None:
    history = [
        TrialRecord(loop="inner", iteration=0, status=Status.KEEP, score=1.0, proposal=Proposal(origin="baseline")),
        rec(1, "LR:up"), rec(2, "LR:up"),              # only up: down untried
        rec(3, "BATCH:up"), rec(4, "BATCH:down"),      # both tried
        rec(5, "PATTERN:set"),                         # set once: done
        rec(6, "DEPTH:down", Status.CRASH),            # a crash is a measurement too
        TrialRecord(loop="inner", iteration=7, status=Status.REJECTED, rejections=("duplicate: ...",)),
    ]
    untried = untried_directions(history, ["LR", "BATCH", "PATTERN", "DEPTH", "WD"])
    assert untried == {"LR": ["down"], "DEPTH": ["up"], "WD": ["up", "down"]}


def test_a_freeze_of_a_parameter_with_an_untried_direction_is_dropped_and_becomes_guidance() -> None:
    config = initial_config(["LR", "BATCH", "PATTERN", "DEPTH", "WD"])
    patch = ConfigPatch(freeze=["LR", "BATCH"], guidance="Refine around the incumbent.", reason="tried without a keep")
    guarded, notes = guard_patch(patch, {"LR": ["down"], "WD": ["up", "down"]})
    assert guarded.freeze == ["BATCH"] and notes == ["LR not frozen: never tried down"]
    assert guarded.guidance.startswith("Not tried yet: LR:down.") and "Refine around the incumbent." in guarded.guidance
    new = apply_patch(config, guarded)
    assert new.frozen_params == ("BATCH",) and "LR" in new.active_params
    unchanged, none = guard_patch(patch, {})
    assert unchanged == patch and none == []
