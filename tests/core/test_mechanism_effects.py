"""Effect tests of the mechanism library: each mechanism changes the search in the situation it is
for, and leaves it alone in the situation it is not for.

Every test is a paired comparison on one small synthetic target (four knobs: a log-scale float, a
linear float, an int and a choice; known optimum 3.0): the same seed, the same proposer draws (the
:class:`Walker` draws from ``ctx.seed`` only), once with the mechanism attached and once without.
"With" must show effect counts (``hook_effects``) and different proposals; "not for" must show
calls and no effect, and the very same proposals as the run without it.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import pytest

from core.inner_loop import InnerLoopController, hook_call_totals, hook_effect_totals
from core.mechanism import Mechanism, ParamSpace
from core.mechanisms import build, space_param
from core.mechanisms.memory import MemoryMechanism, default_path, target_digest
from core.mechanisms.multiscale import MultiScaleBanditMechanism
from core.mechanisms.pattern import PatternSearchMechanism
from core.plugins import ExecContext, Executor, MetricEvaluator, Proposer, StrictImprovement
from core.records import ExecutionResult, Proposal, ProposalContext, Status, TrialRecord
from core.state import RunDir

DIMS: dict[str, dict[str, Any]] = {
    "LR": {"kind": "float", "low": 1e-4, "high": 0.1, "log": True, "value": 0.001},
    "WD": {"kind": "float", "low": 0.0, "high": 1.0, "value": 0.0},
    "DEPTH": {"kind": "int", "low": 1, "high": 16, "value": 4},
    "ACT": {"kind": "choice", "choices": ["relu", "gelu", "silu"], "value": "relu"},
}
SPACE = space_param(DIMS)
START = {name: spec["value"] for name, spec in DIMS.items()}
NAMES = list(DIMS)


def loss(c: dict[str, Any]) -> float:
    return (3.0 + 0.3 * math.log2(c["LR"] / 0.008) ** 2 + 2.0 * (c["WD"] - 0.3) ** 2
            + 0.05 * (c["DEPTH"] - 8) ** 2 + {"relu": 0.2, "gelu": 0.0, "silu": 0.1}[c["ACT"]])


def parent_config(run_dir: Path, incumbent: str | None) -> dict[str, Any]:
    return json.loads((run_dir / incumbent).read_text()) if incumbent else dict(START)


class Walker(Proposer):
    """A seeded one-knob random walk around the incumbent (the stand-in for an LLM proposer).

    Its draws depend on ``ctx.seed`` and the re-ask count only, so two runs with the same seed draw
    the same; it honours ``prefer_params`` (70% of picks), ``avoid_params``, ``avoid_regions`` (it
    turns the other way) and ``step_scale``.
    ``circle`` restricts it to those knobs (a proposer stuck in a corner)."""

    def __init__(self, run_dir: Path, circle: tuple[str, ...] = ()) -> None:
        self.run_dir = run_dir
        self.circle = circle

    def propose(self, ctx: ProposalContext) -> Proposal:
        current = parent_config(self.run_dir, ctx.incumbent)
        rng = random.Random(ctx.seed * 31 + len(ctx.feedback))
        cons = ctx.guidance.constraints
        names = [n for n in (self.circle or NAMES) if n not in cons.avoid_params] or NAMES
        prefer = [n for n in cons.prefer_params if n in NAMES]
        name = rng.choice(prefer) if prefer and rng.random() < 0.7 else rng.choice(names)
        up = rng.random() < 0.5
        if f"{name}:{'up' if up else 'down'}" in cons.avoid_regions:
            up = not up
        scale = cons.step_scale or 1.0
        spec, value = DIMS[name], current[name]
        if spec["kind"] == "choice":
            new = rng.choice([c for c in spec["choices"] if c != value])
        elif spec["kind"] == "int":
            new = min(spec["high"], max(spec["low"], value + (1 if up else -1) * max(1, round(2 * scale))))
        elif spec.get("log"):
            new = float(f"{min(spec['high'], max(spec['low'], value * 2.0 ** (scale if up else -scale))):.4g}")
        else:
            new = float(f"{min(spec['high'], max(spec['low'], value + (0.125 if up else -0.125) * scale)):.4g}")
        region = f"{name}:{'set' if spec['kind'] == 'choice' else ('up' if new > value else 'down')}"
        return Proposal(changes={name: new}, region=region, hypothesis="walk")


class ConfigExecutor(Executor):
    """Measures ``metric`` (default :func:`loss`) of the incumbent's configuration plus the changes;
    writes it as the artifact."""

    def __init__(self, metric=None) -> None:
        self.metric = metric or loss

    def execute(self, proposal: Proposal, ctx: ExecContext) -> ExecutionResult:
        config = {**parent_config(ctx.run_dir, ctx.incumbent), **proposal.changes}
        ctx.trial_dir.mkdir(parents=True, exist_ok=True)
        path = ctx.trial_dir / "config.json"
        path.write_text(json.dumps(config))
        return ExecutionResult(status="ok", metrics={"loss": self.metric(config)},
                               artifact=str(path.relative_to(ctx.run_dir)))


def run(tmp_path: Path, mechanism: Mechanism | None, *, seed: int = 0, iterations: int = 12, circle: tuple[str, ...] = (),
        search: dict[str, Any] | None = None, tag: str = "", metric=None) -> list[TrialRecord]:
    folder = tmp_path / f"run-{tag or (mechanism.name if mechanism else 'none')}-{seed}"
    loop = InnerLoopController(run=RunDir(folder, fsync=False), proposer=Walker(folder, circle),
                               executor=ConfigExecutor(metric),
                               evaluator=MetricEvaluator(metric="loss"), decider=StrictImprovement(), seed=seed)
    loop.search = dict(search or {"active_params": NAMES})
    if mechanism is not None:
        loop.attach(mechanism)
    loop.ensure_baseline()
    records = loop.run_cycle(0, iterations)
    loop.run.close()
    return records


def changes(records: list[TrialRecord]) -> list[dict[str, Any]]:
    return [dict(r.proposal.changes) if r.proposal else {} for r in records]


def effects(records: list[TrialRecord], name: str) -> dict[str, int]:
    return hook_effect_totals(records).get(name, {})


def best(records: list[TrialRecord]) -> float:
    return min(r.best_after for r in records if r.best_after is not None)


def paired(tmp_path: Path, make, *, seed: int = 0, **kwargs: Any) -> tuple[list[TrialRecord], list[TrialRecord]]:
    return run(tmp_path, make(), seed=seed, **kwargs), run(tmp_path, None, seed=seed, **kwargs)


# -- the surrogate-guided proposer ---------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_surrogate_proposes_once_it_has_data_and_changes_the_search(tmp_path: Path, seed: int):
    with_, without = paired(tmp_path, lambda: build("surrogate", space=SPACE, min_trials=4), seed=seed)
    # the first iterations (fewer than min_trials scored) are the proposer's, identical in both runs
    assert changes(with_)[:3] == changes(without)[:3]
    assert effects(with_, "surrogate")["propose"] >= 6
    assert changes(with_) != changes(without)
    assert all(r.proposal.origin == "surrogate" for r in with_[4:])


def test_surrogate_finds_a_better_configuration_than_the_walk_on_paired_seeds(tmp_path: Path):
    gains = [best(run(tmp_path, None, seed=s, iterations=16)) - best(run(tmp_path, build("surrogate", space=SPACE), seed=s,
                                                                         iterations=16)) for s in range(6)]
    assert sum(gains) / len(gains) > 0.1, gains  # lower loss with the model, on average over the pairs
    assert sum(g > 0 for g in gains) >= 4, gains


def valley(c: dict[str, Any]) -> float:
    """A curved, badly scaled valley (like the suite's ``coupled``): the best LR moves with WD, and one
    doubling of LR costs about 15 times what an eighth of WD's range does."""
    return 3.0 + 1.5 * (math.log2(c["LR"] / 0.001) - 2.0 * c["WD"] - 0.3) ** 2 + 0.5 * (c["WD"] - 0.6) ** 2


@pytest.mark.parametrize("steep", ["LR", "WD", "DEPTH"])
def test_surrogate_fits_a_narrow_kernel_on_the_steep_parameter_and_a_wide_one_on_the_flat(steep: str):
    space, rng = ParamSpace(DIMS), random.Random(7)
    numbers = ["LR", "WD", "DEPTH"]
    xs = [{**START, **{n: space.move(n, START[n], rng.uniform(-3.0, 3.0), rng) for n in numbers}} for _ in range(24)]
    ys = [(space.coordinate(steep, x[steep]) - space.coordinate(steep, START[steep])) ** 2 for x in xs]
    widths = build("surrogate", space=SPACE).fit_widths(space, xs, ys, sorted(DIMS))
    flat = [n for n in numbers if n != steep]
    assert all(widths[steep] < widths[n] for n in flat), widths
    assert set(widths) == set(numbers)  # a choice keeps its fixed kernel


def test_surrogate_keeps_one_width_with_too_few_trials_to_fit():
    # the same steep LR: three trials (fewer than two per number) keep the one width, twelve fit it
    space, mechanism = ParamSpace(DIMS), build("surrogate", space=SPACE)

    def widths(n: int) -> dict[str, float]:
        xs = [dict(START, LR=0.001 * 2 ** (i / 2), WD=0.05 * (i % 4)) for i in range(n)]
        return mechanism.fit_widths(space, xs, [(i / 2) ** 2 for i in range(n)], sorted(DIMS))
    assert set(widths(3).values()) == {2.0}
    assert widths(12)["LR"] != 2.0


def test_surrogate_fitted_widths_beat_one_width_on_a_badly_scaled_valley(tmp_path: Path):
    search = {"active_params": ["LR", "WD"]}
    gains = [best(run(tmp_path, build("surrogate", space=SPACE, fit=False), seed=s, iterations=20, search=search,
                      tag="one", metric=valley)) -
             best(run(tmp_path, build("surrogate", space=SPACE), seed=s, iterations=20, search=search, tag="fit",
                      metric=valley))
             for s in range(6)]
    assert sum(gains) / len(gains) > 0.01, gains  # lower loss with a width per parameter, over the pairs
    assert sum(g > 0 for g in gains) >= 4, gains


def test_surrogate_parzen_model_proposes_too(tmp_path: Path):
    with_, without = paired(tmp_path, lambda: build("surrogate", space=SPACE, model="parzen"), iterations=8)
    assert effects(with_, "surrogate")["propose"] >= 4 and changes(with_) != changes(without)


def test_surrogate_never_proposes_a_measured_configuration(tmp_path: Path):
    records = run(tmp_path, build("surrogate", space=SPACE, min_trials=2), iterations=20)
    space = ParamSpace(DIMS)
    keys = [space.key(config) for _, config, _ in space.walk(tuple(records))]
    ours = [space.key(config) for _, config, r in space.walk(tuple(records)) if r.proposal.origin == "surrogate"]
    assert ours and all(keys.count(k) == 1 for k in ours)


@pytest.mark.parametrize("params", [{"min_trials": 20}, {"space": ""}], ids=["too-few-trials", "no-space"])
def test_surrogate_defers_to_the_proposer_where_it_cannot_model(tmp_path: Path, params: dict[str, Any]):
    with_, without = paired(tmp_path, lambda: build("surrogate", **{"space": SPACE, **params}), iterations=8)
    assert hook_call_totals(with_)["surrogate"]["propose"] >= 8  # every iteration (and every re-ask)
    assert effects(with_, "surrogate") == {}
    assert changes(with_) == changes(without)


def test_surrogate_reads_the_space_from_the_search_config_too(tmp_path: Path):
    records = run(tmp_path, build("surrogate"), search={"active_params": NAMES, "params": DIMS}, iterations=8)
    assert effects(records, "surrogate")["propose"] >= 3


def test_surrogate_every_second_iteration_leaves_the_others_to_the_proposer(tmp_path: Path):
    records = run(tmp_path, build("surrogate", space=SPACE, every=2), iterations=12)
    origins = {r.iteration: r.proposal.origin for r in records}
    assert {i for i, o in origins.items() if o == "surrogate"} <= {i for i in origins if i % 2 == 0}
    assert any(o == "proposer" for i, o in origins.items() if i > 6)
    assert effects(records, "surrogate")["propose"] >= 3


# -- resume: the proposing mechanisms rebuild everything from the journal -----------------------------
@pytest.mark.parametrize("name", ["surrogate", "pattern", "multiscale"])
def test_a_resumed_run_proposes_what_an_uninterrupted_one_does(tmp_path: Path, name: str):
    whole = run(tmp_path, build(name, space=SPACE), iterations=10, tag="whole")
    folder = tmp_path / "halves"
    for _ in range(2):  # stop after 5 iterations; a new controller and a new mechanism instance go on
        loop = InnerLoopController(run=RunDir(folder, fsync=False), proposer=Walker(folder), executor=ConfigExecutor(),
                                   evaluator=MetricEvaluator(metric="loss"), decider=StrictImprovement())
        loop.search = {"active_params": NAMES}
        loop.attach(build(name, space=SPACE))
        loop.ensure_baseline()
        loop.run_cycle(0, 5 if not loop.records(0) else 10)
        halves = loop.records(0)
        loop.run.close()
    assert changes(halves) == changes(whole)


# -- coordinate / pattern search -----------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pattern_search_takes_over_proposing_and_changes_the_search(tmp_path: Path, seed: int):
    with_, without = paired(tmp_path, lambda: build("pattern", space=SPACE), seed=seed)
    assert effects(with_, "pattern")["propose"] == len(with_)
    assert changes(with_) != changes(without)


def test_pattern_search_finds_a_better_configuration_than_the_walk_on_paired_seeds(tmp_path: Path):
    gains = [best(run(tmp_path, None, seed=s)) - best(run(tmp_path, build("pattern", space=SPACE), seed=s)) for s in range(6)]
    assert sum(gains) / len(gains) > 0.1 and sum(g >= 0 for g in gains) >= 4, gains


def test_pattern_search_repeats_a_kept_move_with_a_larger_step(tmp_path: Path):
    records = run(tmp_path, build("pattern", space=SPACE), iterations=10)
    space = ParamSpace(DIMS)
    walked = space.walk(tuple(records))
    follow_ups = 0
    for (before, config, record), (nbefore, nconfig, nrecord) in zip(walked, walked[1:], strict=False):
        moved = [n for n in DIMS if config[n] != before[n]]
        if record.kept and len(moved) == 1 and DIMS[moved[0]]["kind"] != "choice":
            name = moved[0]
            assert [n for n in DIMS if nconfig[n] != nbefore[n]] == [name]
            assert "pattern move" in nrecord.proposal.hypothesis
            step, nstep = (abs(space.coordinate(name, b) - space.coordinate(name, a))
                           for a, b in ((before[name], config[name]), (nbefore[name], nconfig[name])))
            assert nstep > step or nconfig[name] in (DIMS[name]["low"], DIMS[name]["high"])
            follow_ups += 1
    assert follow_ups >= 2


def test_pattern_search_halves_a_step_once_both_directions_failed():
    mech = PatternSearchMechanism(space=SPACE)
    space = ParamSpace(DIMS)
    hist = (TrialRecord(loop="inner", iteration=0, status=Status.KEEP, score=5.0, proposal=Proposal(origin="baseline")),
            TrialRecord(loop="inner", iteration=1, status=Status.DISCARD, score=6.0,
                        proposal=Proposal(changes={"DEPTH": 6}, region="DEPTH:up")),
            TrialRecord(loop="inner", iteration=2, status=Status.DISCARD, score=6.0,
                        proposal=Proposal(changes={"DEPTH": 2}, region="DEPTH:down")))
    ctx = ProposalContext(loop="inner", iteration=3, cycle=0, history=hist)
    steps, tried, pattern = mech.state(space, ctx)
    assert steps["DEPTH"] == 0.5 and steps["LR"] == 1.0 and tried["DEPTH"] == set() and pattern is None
    one = ProposalContext(loop="inner", iteration=2, cycle=0, history=hist[:2])
    assert mech.state(space, one)[1]["DEPTH"] == {"up"}


def test_pattern_search_rests_when_every_step_is_spent(tmp_path: Path):
    # one active knob and min_step = start_step: once DEPTH has no untried move left it defers
    records = run(tmp_path, build("pattern", space=SPACE, min_step=1.0), iterations=12, search={"active_params": ["DEPTH"]})
    origins = [r.proposal.origin for r in records]
    assert origins[0] == "pattern" and "proposer" in origins
    assert hook_call_totals(records)["pattern"]["propose"] >= 12
    assert effects(records, "pattern")["propose"] == origins.count("pattern")


def test_pattern_search_without_a_space_does_nothing(tmp_path: Path):
    with_, without = paired(tmp_path, lambda: build("pattern"), iterations=6)
    assert effects(with_, "pattern") == {} and changes(with_) == changes(without)


# -- multi-scale bandit ----------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1])
def test_multiscale_bandit_proposes_moves_of_both_sizes(tmp_path: Path, seed: int):
    with_, without = paired(tmp_path, lambda: build("multiscale", space=SPACE), seed=seed, iterations=14)
    assert effects(with_, "multiscale")["propose"] == 14
    assert changes(with_) != changes(without)
    mech, space = MultiScaleBanditMechanism(space=SPACE), ParamSpace(DIMS)
    sizes = {mech._arm(space, n, b[n], c[n]) for b, c, _ in space.walk(tuple(with_)) for n in DIMS if c[n] != b[n]}
    assert {"small", "large"} <= sizes


def test_multiscale_bandit_in_guidance_mode_steers_the_proposer(tmp_path: Path):
    with_, without = paired(tmp_path, lambda: build("multiscale", space=SPACE, mode="guidance"), iterations=10)
    assert effects(with_, "multiscale") == {"guidance": 10}
    assert all(r.proposal.origin == "proposer" for r in with_)
    assert changes(with_) != changes(without)


def test_multiscale_bandit_prefers_the_arm_that_paid():
    space = ParamSpace(DIMS)
    base = TrialRecord(loop="inner", iteration=0, status=Status.KEEP, score=5.0, proposal=Proposal(origin="baseline"))
    small_kept = TrialRecord(loop="inner", iteration=1, status=Status.KEEP, score=4.0,
                             proposal=Proposal(changes={"LR": 0.0014}, region="LR:up"))  # half a doubling: small
    large_failed = TrialRecord(loop="inner", iteration=2, status=Status.DISCARD, score=6.0,
                               proposal=Proposal(changes={"LR": 0.0056}, region="LR:up"))  # two doublings: large
    mech = MultiScaleBanditMechanism(space=SPACE, exploration=0.0)
    ctx = ProposalContext(loop="inner", iteration=3, cycle=0, history=(base, small_kept, large_failed),
                          search={"active_params": ["LR"]})
    assert [(n, s, pulls) for n, s, _, pulls, _ in mech.ranking(space, ctx)] == [("LR", "small", 1), ("LR", "large", 1)]
    proposal = mech.propose(ctx)
    assert proposal.changes == {"LR": 0.00198} and proposal.region == "LR:up"  # small, the way the keep went


def test_multiscale_bandit_breaks_ties_by_seed_not_by_file_order():
    firsts = set()
    for seed in range(12):
        ctx = ProposalContext(loop="inner", iteration=1, cycle=0, seed=seed, search={"active_params": NAMES})
        reordered = ctx.model_copy(update={"search": {"active_params": NAMES[::-1]}})
        mech = MultiScaleBanditMechanism(space=SPACE)
        first = mech.ranking(ParamSpace(DIMS), ctx)[0][:2]
        assert first == mech.ranking(ParamSpace(DIMS), reordered)[0][:2]
        firsts.add(first)
    assert len(firsts) >= 3


# -- orthogonal exploration (it used to need the same knob three times in a row) -------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_orthogonal_acts_when_one_knob_proposals_circle_two_knobs(tmp_path: Path, seed: int):
    with_, without = paired(tmp_path, lambda: build("orthogonal"), seed=seed, circle=("WD", "DEPTH"))
    assert effects(with_, "orthogonal").get("guidance", 0) >= 1
    assert changes(with_) != changes(without)
    touched = {n for c in changes(with_) for n in c}
    assert touched & {"LR", "ACT"}  # it moved the search out of the corner
    assert not {n for c in changes(without) for n in c} & {"LR", "ACT"}


def test_orthogonal_refuses_once_per_iteration_then_lets_the_proposer_insist(tmp_path: Path):
    # a proposer that ignores guidance and circles two knobs: with no limit, every refused iteration
    # is lost (REJECTED); with the default limit of one refusal, the re-asked candidate runs
    class Stubborn(Walker):
        def propose(self, ctx: ProposalContext) -> Proposal:
            return super().propose(ctx.model_copy(update={"guidance": type(ctx.guidance)()}))

    def go(tag: str, **params: Any) -> list[TrialRecord]:
        folder = tmp_path / tag
        loop = InnerLoopController(run=RunDir(folder, fsync=False), proposer=Stubborn(folder, ("WD", "DEPTH")),
                                   executor=ConfigExecutor(), evaluator=MetricEvaluator(metric="loss"),
                                   decider=StrictImprovement())
        loop.search = {"active_params": NAMES}
        loop.attach(build("orthogonal", **params))
        loop.ensure_baseline()
        return loop.run_cycle(0, 12)

    def refusals(r: TrialRecord) -> int:
        return sum(x.startswith("orthogonal:") for x in r.rejections)

    limited, unlimited = go("limited"), go("unlimited", max_refusals=0)
    assert effects(limited, "orthogonal")["filter"] >= 1
    assert max(refusals(r) for r in limited) == 1
    assert any(r.status is Status.REJECTED and refusals(r) >= 2 for r in unlimited)  # lost to the filter alone


class RoundRobin(Proposer):
    """Moves the knobs in turn, one per iteration: a search that spreads its tries."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir

    def propose(self, ctx: ProposalContext) -> Proposal:
        name = NAMES[ctx.iteration % len(NAMES)]
        value = parent_config(self.run_dir, ctx.incumbent)[name]
        new = {"LR": value * 0.5, "WD": 1.0, "DEPTH": value + 1, "ACT": "silu"}[name]
        return Proposal(changes={name: new}, region=f"{name}:{'set' if name == 'ACT' else 'up'}")


def test_orthogonal_stays_out_of_a_search_that_spreads_its_tries(tmp_path: Path):
    folder = tmp_path / "rr"
    loop = InnerLoopController(run=RunDir(folder, fsync=False), proposer=RoundRobin(folder), executor=ConfigExecutor(),
                               evaluator=MetricEvaluator(metric="loss"), decider=StrictImprovement())
    loop.search = {"active_params": NAMES}
    loop.attach(build("orthogonal"))
    loop.ensure_baseline()
    records = loop.run_cycle(0, 8)
    assert hook_call_totals(records)["orthogonal"]["guidance"] == 8
    assert effects(records, "orthogonal") == {}


# -- bandit: its preference follows the record, not the order of the constants ----------------------
def test_bandit_guidance_does_not_depend_on_the_order_of_the_constants(tmp_path: Path):
    forward = run(tmp_path, build("bandit", top_k=1), search={"active_params": NAMES}, tag="fwd")
    backward = run(tmp_path, build("bandit", top_k=1), search={"active_params": NAMES[::-1]}, tag="bwd")
    assert changes(forward) == changes(backward)
    assert effects(forward, "bandit")["guidance"] == 12


def test_bandit_changes_the_search(tmp_path: Path):
    with_, without = paired(tmp_path, lambda: build("bandit", top_k=1))
    assert effects(with_, "bandit")["guidance"] == 12
    assert changes(with_) != changes(without)


# -- tabu and step size, the same way --------------------------------------------------------------------
class Script(Proposer):
    """Proposes the given changes in order (each one once); the region is read against the incumbent."""

    def __init__(self, run_dir: Path, script: list[dict[str, Any]]) -> None:
        self.run_dir, self.script = run_dir, list(script)

    def propose(self, ctx: ProposalContext) -> Proposal:
        current = parent_config(self.run_dir, ctx.incumbent)
        step = self.script.pop(0)
        return ParamSpace(DIMS).proposal(current, step, "scripted")


def scripted(tmp_path: Path, mechanism: Mechanism | None, script: list[dict[str, Any]]) -> list[TrialRecord]:
    folder = tmp_path / f"script-{mechanism.name if mechanism else 'none'}"
    loop = InnerLoopController(run=RunDir(folder, fsync=False), proposer=Script(folder, script), executor=ConfigExecutor(),
                               evaluator=MetricEvaluator(metric="loss"), decider=StrictImprovement())
    if mechanism is not None:
        loop.attach(mechanism)
    loop.ensure_baseline()
    return loop.run_cycle(0, 3)


def test_tabu_changes_a_search_that_repeats_a_failed_region_from_a_new_incumbent(tmp_path: Path):
    # DEPTH:down fails, LR:up is kept, DEPTH:down again (a new configuration: no duplicate) is tabu
    script = [{"DEPTH": 2}, {"LR": 0.002}, {"DEPTH": 2}, {"WD": 0.125}]
    with_, without = scripted(tmp_path, build("tabu"), script), scripted(tmp_path, None, script)
    assert effects(with_, "tabu") == {"guidance": 2, "filter": 1}
    assert changes(with_) == [{"DEPTH": 2}, {"LR": 0.002}, {"WD": 0.125}]
    assert changes(without) == [{"DEPTH": 2}, {"LR": 0.002}, {"DEPTH": 2}]


def test_step_size_shrinks_moves_after_failures(tmp_path: Path):
    with_, without = paired(tmp_path, lambda: build("step_size", patience=2), iterations=12)
    assert effects(with_, "step_size")["guidance"] == 12
    assert changes(with_) != changes(without)


# -- persistent memory across runs on the same target ------------------------------------------------------
def memory(path: Path, run_id: str, **params: Any) -> MemoryMechanism:
    return MemoryMechanism(path=str(path), run_id=run_id, target="synthetic", **params)


def test_memory_replays_what_an_earlier_run_on_the_target_found(tmp_path: Path):
    path = tmp_path / "cache" / "memory.json"
    first = run(tmp_path, memory(path, "run-1"), seed=0, iterations=12, tag="first")
    assert effects(first, "memory") == {}  # nothing remembered yet: calls, no effect
    data = json.loads(path.read_text())
    entry = data["entries"][0]
    assert entry["run_id"] == "run-1" and entry["date"] and entry["score"] == pytest.approx(best(first))
    assert loss({**START, **entry["changes"]}) == pytest.approx(entry["score"])
    # a second run on the same target, another seed: it starts from the first run's best
    with_, without = paired(tmp_path, lambda: memory(path, "run-2"), seed=5, iterations=4)
    assert effects(with_, "memory") == {"guidance": 3, "propose": 1}
    assert with_[0].proposal.changes == entry["changes"] and with_[0].proposal.hypothesis.startswith("[memory] run run-1")
    assert best(with_) < best(without)
    assert {e["run_id"] for e in json.loads(path.read_text())["entries"]} >= {"run-1"}


def test_memory_of_another_target_or_a_broken_file_has_no_effect(tmp_path: Path):
    other = tmp_path / "cache" / "other.json"
    with_, without = paired(tmp_path, lambda: memory(other, "run-x"), iterations=4)
    assert effects(with_, "memory") == {} and changes(with_) == changes(without)
    broken = tmp_path / "cache" / "broken.json"
    broken.parent.mkdir(parents=True, exist_ok=True)
    broken.write_text("{not json")
    records = run(tmp_path, memory(broken, "run-y"), iterations=4, tag="broken")
    assert effects(records, "memory") == {} and broken.with_suffix(".corrupt").exists()


def test_memory_path_is_per_target_under_the_user_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    digest = target_digest("LR = 0.001\n")
    assert default_path(digest) == tmp_path / "bilevel-autoresearch" / "memory" / f"{digest}.json"
    assert digest != target_digest("LR = 0.002\n")


def test_memory_replay_rebuilds_state_without_writing(tmp_path: Path):
    path = tmp_path / "m.json"
    records = run(tmp_path, memory(path, "run-1"), iterations=6, tag="m")
    before = path.read_text()
    resumed = memory(path, "run-1")
    resumed.replay(tuple(records))
    assert path.read_text() == before and resumed.remembered == []  # its own entries are not "earlier runs"
    kept: dict[str, Any] = {}
    for r in records:
        if r.kept:
            kept.update(r.proposal.changes)
    assert kept and resumed.changes == kept
