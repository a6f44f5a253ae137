"""Effect, not calls: the journal records per hook call whether it changed what happened."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.inner_loop import hook_call_totals, hook_effect_totals
from core.records import Constraints, FilterVerdict, Guidance, Proposal, TrialRecord
from core.state import RunDir
from tests.core.helpers import make_controller, make_mechanism

ITERATIONS = 4


def run(tmp_path: Path, mechanism) -> list[TrialRecord]:
    controller = make_controller(tmp_path / "run")
    controller.attach(mechanism)
    controller.ensure_baseline()
    records = controller.run_cycle(0, ITERATIONS)
    controller.run.close()
    return records


def test_a_placebo_is_called_every_iteration_and_has_no_effect(tmp_path: Path):
    placebo = make_mechanism("placebo", guidance=lambda ctx: None, propose=lambda ctx: None,
                             filter=lambda p, ctx: None, decide=lambda r, ctx: None, observe=lambda r: None)
    records = run(tmp_path, placebo)
    calls = hook_call_totals(records)["placebo"]
    assert all(calls[h] == ITERATIONS for h in ("guidance", "propose", "filter", "decide", "observe"))
    assert hook_effect_totals(records) == {}


@pytest.mark.parametrize(("hooks", "hook"), [
    ({"guidance": lambda ctx: Guidance(text="try larger x")}, "guidance"),
    ({"guidance": lambda ctx: Guidance(constraints=Constraints(avoid_params=("y",)))}, "guidance"),
    ({"propose": lambda ctx: Proposal(changes={"x": 2.5 - ctx.iteration / 10}, region="x:mech")}, "propose"),
    ({"filter": lambda p, ctx: FilterVerdict.rewrite(Proposal(changes={"x": 2.9 - ctx.iteration / 10}, region="r"))},
     "filter"),
    ({"decide": lambda r, ctx: not r.kept}, "decide"),
])
def test_a_hook_that_changes_something_counts_an_effect_each_time(tmp_path: Path, hooks, hook):
    records = run(tmp_path, make_mechanism("acts", **hooks))
    assert hook_effect_totals(records)["acts"][hook] == ITERATIONS
    assert hook_call_totals(records)["acts"][hook] == ITERATIONS


@pytest.mark.parametrize(("hooks", "hook"), [
    ({"guidance": lambda ctx: Guidance()}, "guidance"),  # empty guidance: nothing added
    ({"filter": lambda p, ctx: FilterVerdict.accept()}, "filter"),
    ({"filter": lambda p, ctx: FilterVerdict.rewrite(p)}, "filter"),  # a rewrite to the same candidate
    ({"decide": lambda r, ctx: r.kept}, "decide"),  # agrees with the decider
])
def test_a_hook_that_returns_something_without_changing_anything_has_no_effect(tmp_path: Path, hooks, hook):
    records = run(tmp_path, make_mechanism("noop", **hooks))
    assert hook_call_totals(records)["noop"][hook] == ITERATIONS
    assert hook_effect_totals(records).get("noop", {}).get(hook, 0) == 0


def test_a_filter_that_refuses_counts_one_effect_per_refusal(tmp_path: Path):
    refused = []

    def wall(p, ctx):
        if len(refused) < 3:
            refused.append(p)
            return FilterVerdict.reject("not yet")
        return None

    records = run(tmp_path, make_mechanism("wall", filter=wall))
    assert hook_effect_totals(records)["wall"]["filter"] == 3


def test_effects_are_journaled_and_replayed(tmp_path: Path):
    records = run(tmp_path, make_mechanism("acts", guidance=lambda ctx: Guidance(text="go")))
    reopened = make_controller(tmp_path / "run", run=RunDir.open(tmp_path / "run", fsync=False))
    try:
        assert [r.hook_effects for r in reopened.history[1:]] == [r.hook_effects for r in records]
    finally:
        reopened.run.close()
