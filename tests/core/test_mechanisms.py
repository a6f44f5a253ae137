"""The train_opt mechanism library: behaviour of each mechanism, the template registry, rendering,
and the generated-code policy every template must pass (it is hot-loaded as generated source)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path
from typing import Any

import pytest

from core.inner_loop import InnerLoopController
from core.mechanism import Mechanism
from core.mechanisms import (
    LIBRARY,
    TEMPLATES,
    BanditMechanism,
    OrthogonalExplorationMechanism,
    StepSizeMechanism,
    TabuMechanism,
    build,
    render_template,
    template_source,
)
from core.plugins import ExecContext, Executor, MetricEvaluator, Proposer
from core.records import ExecutionResult, Proposal, ProposalContext, Status, TrialRecord
from core.state import RunDir

NAMES = sorted(TEMPLATES)


# -- builders -----------------------------------------------------------------------------------------
def proposal(region: str, origin: str = "proposer") -> Proposal:
    changes: dict[str, Any] = {}
    for part in region.split("+"):
        name, _, qualifier = part.partition(":")
        changes[name] = qualifier
    if region.startswith("template:"):
        changes = {"template": region.split(":", 1)[1], "params": {}}
    return Proposal(changes=changes, region=region, origin=origin)


def rec(iteration: int, status: str, region: str | None = None, *, score: float | None = None,
        best_before: float | None = None) -> TrialRecord:
    if region is None:
        return TrialRecord(loop="inner", iteration=iteration, status=Status(status))
    return TrialRecord(loop="inner", iteration=iteration, status=Status(status), proposal=proposal(region),
                       score=score, best_before=best_before)


def baseline() -> TrialRecord:
    return TrialRecord(loop="inner", iteration=0, status=Status.KEEP, score=1.0,
                       proposal=Proposal(origin="baseline", region="baseline"))


def history(*entries: tuple[str, str]) -> tuple[TrialRecord, ...]:
    """Baseline at iteration 0, then one record per ``(status, region)``."""
    return (baseline(), *(rec(i, status, region) for i, (status, region) in enumerate(entries, start=1)))


def ctx(hist: tuple[TrialRecord, ...], *, iteration: int | None = None, **kwargs: Any) -> ProposalContext:
    return ProposalContext(loop="inner", iteration=len(hist) if iteration is None else iteration, cycle=0,
                           history=hist, **kwargs)


def replayed(mechanism: Mechanism, hist: tuple[TrialRecord, ...]) -> Mechanism:
    mechanism.replay(hist)
    return mechanism


# -- tabu -----------------------------------------------------------------------------------------------
def test_tabu_mechanism_blocks_repeat_proposal():
    hist = history(("keep", "DEPTH:up"), ("discard", "WD:up"), ("keep", "WD:down"), ("discard", "MATRIX_LR:down"))
    tabu = replayed(TabuMechanism(), hist)
    verdict = tabu.filter(proposal("MATRIX_LR:down"), ctx(hist))
    assert verdict is not None and verdict.action == "reject"
    assert "MATRIX_LR:down was discarded at iteration 4; try another region" in verdict.reason
    assert tabu.filter(proposal("MATRIX_LR:up"), ctx(hist)) is None
    guidance = tabu.guidance(ctx(hist))
    assert guidance.constraints.avoid_regions == ("MATRIX_LR:down", "WD:up")
    assert "MATRIX_LR:down (discarded at 4)" in guidance.text


def test_tabu_mechanism_releases_region_after_tenure():
    hist = history(("discard", "MATRIX_LR:down"))
    tabu = replayed(TabuMechanism(tenure=3), hist)
    assert tabu.filter(proposal("MATRIX_LR:down"), ctx(hist, iteration=4)).action == "reject"
    assert "1 more iteration)" in tabu.filter(proposal("MATRIX_LR:down"), ctx(hist, iteration=4)).reason
    assert tabu.filter(proposal("MATRIX_LR:down"), ctx(hist, iteration=5)) is None
    assert tabu.guidance(ctx(hist, iteration=5)) is None


def test_tabu_mechanism_never_blocks_kept_regions():
    hist = history(("keep", "DEPTH:up"), ("keep", "MATRIX_LR:up"), ("discard", "MATRIX_LR:up"))
    tabu = replayed(TabuMechanism(), hist)
    assert tabu.filter(proposal("DEPTH:up"), ctx(hist)) is None
    assert tabu.filter(proposal("MATRIX_LR:up"), ctx(hist)) is None
    assert tabu.guidance(ctx(hist)) is None


def test_tabu_mechanism_keys_on_level2_template_regions():
    hist = history(("crash", "template:bandit"), ("keep", "template:tabu"))
    tabu = replayed(TabuMechanism(), hist)
    verdict = tabu.filter(proposal("template:bandit"), ctx(hist))
    assert verdict.action == "reject" and "template:bandit was crashed at iteration 1" in verdict.reason
    assert tabu.filter(proposal("template:tabu"), ctx(hist)) is None


def test_tabu_mechanism_can_spare_plain_discards():
    hist = history(("discard", "WD:up"), ("timeout", "DEPTH:up"))
    tabu = replayed(TabuMechanism(tabu_discards=False), hist)
    assert tabu.filter(proposal("WD:up"), ctx(hist)) is None
    assert "DEPTH:up was timed out" in tabu.filter(proposal("DEPTH:up"), ctx(hist)).reason


def test_tabu_mechanism_replay_rebuilds_observed_state():
    hist = history(("discard", "WD:up"), ("crash", "DEPTH:up"))
    observed = TabuMechanism()
    for record in hist:
        observed.observe(record)
    rebuilt = replayed(TabuMechanism(), hist)
    rebuilt.replay(hist)  # twice: replay starts from scratch, it does not accumulate
    assert rebuilt.guidance(ctx(hist)) == observed.guidance(ctx(hist))
    assert replayed(rebuilt, ()).guidance(ctx(hist)) is None


# -- bandit ---------------------------------------------------------------------------------------------
def test_bandit_mechanism_ranks_paying_param_above_failing_one():
    hist = history(("keep", "A:up"), ("discard", "B:up"), ("keep", "A:down"), ("discard", "B:down"),
                   ("discard", "A:up"), ("discard", "B:up"))
    bandit = BanditMechanism(top_k=1)
    guidance = bandit.guidance(ctx(hist, search={"active_params": ["B", "A"]}))
    assert guidance.constraints.prefer_params == ("A",)
    names = [arm for arm, *_ in bandit.ranking(ctx(hist))]
    assert names.index("A") < names.index("B")
    assert "A (reward 2/3 tries" in guidance.text


def test_bandit_mechanism_explores_untried_arms_first():
    hist = history(("keep", "A:up"), ("keep", "A:down"), ("discard", "B:up"))
    guidance = BanditMechanism().guidance(ctx(hist, search={"active_params": ["A", "B", "C", "D"]}))
    assert set(guidance.constraints.prefer_params) == {"C", "D"}
    assert "C (untried)" in guidance.text and "D (untried)" in guidance.text
    # once every arm is tried, the paying one leads
    hist = (*hist, rec(4, "discard", "C:up"), rec(5, "discard", "D:up"))
    guidance = BanditMechanism().guidance(ctx(hist, search={"active_params": ["A", "B", "C", "D"]}))
    assert guidance.constraints.prefer_params[0] == "A"


def test_bandit_mechanism_breaks_ties_by_seed_not_by_file_order():
    arms = [f"P{i}" for i in range(8)]
    hist = history()  # nothing tried: every arm ties at an infinite bound

    def first(order: list[str], seed: int) -> str:
        return BanditMechanism(top_k=1).guidance(ctx(hist, search={"active_params": order}, seed=seed)).constraints.prefer_params[0]

    # the same seed picks the same arm whatever order the constants are listed in ...
    assert all(first(arms, s) == first(arms[::-1], s) for s in range(10))
    # ... and different seeds spread the first pick over the arms instead of always the first constant
    assert len({first(arms, s) for s in range(40)}) >= 4
    # a tie between tried arms is broken the same way: equal records, no file-order winner
    tied = history(("discard", "A:up"), ("discard", "B:up"))
    picks = {BanditMechanism(top_k=1).guidance(ctx(tied, seed=s)).constraints.prefer_params[0] for s in range(20)}
    assert picks == {"A", "B"}


def test_bandit_mechanism_counts_each_param_of_a_compound_proposal():
    hist = history(("keep", "DEPTH:down+MATRIX_LR:up"), ("discard", "WD:up"))
    ranked = {arm: (n, reward) for arm, _, n, reward in BanditMechanism().ranking(ctx(hist))}
    assert ranked == {"DEPTH": (1, 1.0), "MATRIX_LR": (1, 1.0), "WD": (1, 0.0)}


def test_bandit_mechanism_ranks_level2_templates():
    hist = history(("discard", "template:tabu"), ("keep", "template:bandit"), ("discard", "template:tabu"))
    guidance = BanditMechanism(top_k=1).guidance(ctx(hist))
    assert guidance.constraints.prefer_params == ("template:bandit",)


def test_bandit_mechanism_improvement_reward_and_window():
    hist = (baseline(),
            rec(1, "keep", "A:up", score=0.99, best_before=1.0),  # 1% gain: reward 0.2 of gain_scale 5%
            rec(2, "keep", "B:up", score=0.95, best_before=0.99))  # 4% gain: reward 0.8
    bandit = BanditMechanism(reward="improvement", gain_scale=0.05, exploration=0.0, top_k=1)
    assert bandit.guidance(ctx(hist)).constraints.prefer_params == ("B",)
    # a window of 1 forgets A entirely
    ranked = [arm for arm, *_ in BanditMechanism(window=1).ranking(ctx(hist))]
    assert ranked == ["B"]


def test_bandit_mechanism_is_silent_without_arms():
    assert BanditMechanism().guidance(ctx((baseline(),))) is None


# -- orthogonal -----------------------------------------------------------------------------------------
ACTIVE = {"active_params": ["LR", "WD", "DEPTH", "WIDTH"]}


def narrow_history() -> tuple[TrialRecord, ...]:
    return history(("keep", "DEPTH:up"), ("discard", "LR:up"), ("discard", "LR:down+WD:up"), ("crash", "WD:down"))


def test_orthogonal_mechanism_prefers_untouched_params_when_narrow():
    hist = narrow_history()
    guidance = OrthogonalExplorationMechanism().guidance(ctx(hist, search=ACTIVE))
    # WIDTH was never touched, DEPTH only long ago: both preferred, the never-touched one first
    assert guidance.constraints.prefer_params == ("WIDTH", "DEPTH")
    assert "LR, WD" in guidance.text


def test_orthogonal_mechanism_rejects_proposal_inside_overexplored_set():
    hist = narrow_history()
    mech = OrthogonalExplorationMechanism()
    verdict = mech.filter(proposal("LR:up"), ctx(hist, search=ACTIVE))
    assert verdict.action == "reject"
    assert "try an untried parameter: WIDTH, DEPTH" in verdict.reason
    assert mech.filter(proposal("WD:up+LR:down"), ctx(hist, search=ACTIVE)).action == "reject"
    assert mech.filter(proposal("DEPTH:down"), ctx(hist, search=ACTIVE)) is None
    assert mech.filter(proposal("LR:up+WIDTH:up"), ctx(hist, search=ACTIVE)) is None


def test_orthogonal_mechanism_needs_untried_params_to_act():
    hist = narrow_history()
    mech = OrthogonalExplorationMechanism()
    search = {"active_params": ["LR", "WD"]}
    assert mech.guidance(ctx(hist, search=search)) is None
    assert mech.filter(proposal("LR:up"), ctx(hist, search=search)) is None
    # without active_params the history's union is the candidate set: DEPTH (touched at 1) is untried
    assert mech.guidance(ctx(hist)).constraints.prefer_params == ("DEPTH",)


@pytest.mark.parametrize("entries", [
    (("discard", "LR:up"), ("keep", "LR:down"), ("discard", "LR:up")),  # a keep in the window
    (("discard", "LR:up"), ("discard", "WD:up"), ("discard", "DEPTH:up")),  # already orthogonal
    (("discard", "LR:up"), ("discard", "LR:down")),  # fewer than patience
])
def test_orthogonal_mechanism_stays_quiet_when_search_is_not_narrow(entries):
    hist = history(*entries)
    mech = OrthogonalExplorationMechanism()
    assert mech.guidance(ctx(hist, search=ACTIVE)) is None
    assert mech.filter(proposal("LR:up"), ctx(hist, search=ACTIVE)) is None


def test_orthogonal_mechanism_steers_level2_templates():
    hist = history(("keep", "template:bandit"), ("discard", "template:tabu"), ("discard", "template:tabu"),
                   ("crash", "template:tabu"))
    mech = OrthogonalExplorationMechanism()
    assert mech.guidance(ctx(hist)).constraints.prefer_params == ("template:bandit",)
    assert mech.filter(proposal("template:tabu"), ctx(hist)).action == "reject"
    assert mech.filter(proposal("template:bandit"), ctx(hist)) is None


# -- step size ------------------------------------------------------------------------------------------
def scale_after(mech: StepSizeMechanism, statuses: str) -> float:
    for i, s in enumerate(statuses.split(), start=1):
        mech.observe(rec(i, s, "LR:up"))
    return mech.guidance(ctx((baseline(),))).constraints.step_scale


def test_step_size_mechanism_shrinks_after_patience_non_keeps():
    mech = StepSizeMechanism()
    assert mech.guidance(ctx((baseline(),))).constraints.step_scale == 1.0
    assert scale_after(mech, "discard crash") == 1.0
    assert scale_after(mech, "fail") == 0.5
    assert "smaller moves" in mech.guidance(ctx((baseline(),))).text
    assert scale_after(StepSizeMechanism(), " ".join(["discard"] * 30)) == 0.125  # the floor


def test_step_size_mechanism_grows_after_keep_up_to_cap():
    mech = StepSizeMechanism()
    assert scale_after(mech, "keep") == 1.5
    assert scale_after(mech, "keep") == 2.0  # 2.25 capped
    assert scale_after(mech, "discard discard keep") == 2.0  # a keep resets the miss count
    assert mech.misses == 0


def test_step_size_mechanism_ignores_baseline_and_replays():
    mech = StepSizeMechanism(patience=1)
    mech.observe(baseline())
    assert mech.scale == 1.0
    hist = history(("discard", "LR:up"), ("discard", "LR:down"), ("keep", "WD:up"))
    mech.replay(hist)
    mech.replay(hist)
    assert mech.scale == pytest.approx(0.25 * 1.5)


def test_step_size_mechanism_decide_defers_by_default():
    draft = rec(1, "keep", "LR:up", score=0.9999, best_before=1.0)
    assert StepSizeMechanism().decide(draft, ctx((baseline(),))) is None


def test_step_size_mechanism_decide_discards_small_gains():
    mech = StepSizeMechanism(min_gain=0.01)
    c = ctx((baseline(),))
    assert mech.decide(rec(1, "keep", "LR:up", score=0.995, best_before=1.0), c) is False
    assert mech.decide(rec(1, "keep", "LR:up", score=0.98, best_before=1.0), c) is None
    assert mech.decide(rec(1, "discard", "LR:up", score=1.1, best_before=1.0), c) is None
    up = ctx((baseline(),), direction="maximize")
    assert mech.decide(rec(1, "keep", "LR:up", score=1.005, best_before=1.0), up) is False
    assert mech.decide(rec(1, "keep", "LR:up", score=1.02, best_before=1.0), up) is None


# -- params and registry --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_mechanism_params_merge_over_defaults_and_are_validated(name):
    cls = LIBRARY[name]
    assert cls().params == TEMPLATES[name]["params"]
    key, default = next(iter(TEMPLATES[name]["params"].items()))
    with pytest.raises(ValueError, match="unknown parameter"):
        cls(no_such_knob=1)
    with pytest.raises(ValueError, match=repr(key)):
        cls(**{key: [default]})


def test_mechanism_params_reject_bad_ranges_and_accept_ints_for_floats():
    with pytest.raises(ValueError, match="tenure"):
        TabuMechanism(tenure=0)
    with pytest.raises(ValueError, match="shrink"):
        StepSizeMechanism(shrink=1)
    with pytest.raises(ValueError, match="reward"):
        BanditMechanism(reward="regret")
    with pytest.raises(ValueError):
        TabuMechanism(tabu_discards=1)
    assert StepSizeMechanism(cap=3).params["cap"] == 3.0


def test_template_registry_describes_every_library_mechanism():
    assert set(TEMPLATES) == {"tabu", "bandit", "orthogonal", "step_size", "surrogate", "pattern", "multiscale"}
    assert set(LIBRARY) == set(TEMPLATES) | {"memory"}  # memory writes a file: library only, never sandboxed
    assert {n: t["addresses"] for n, t in TEMPLATES.items()} == {
        "tabu": "repeats", "orthogonal": "narrow", "bandit": "plateau", "step_size": "crashes/overshoot",
        "surrogate": "plateau", "pattern": "repeats", "multiscale": "scale"}
    for name, info in TEMPLATES.items():
        module = importlib.import_module(f"core.mechanisms.{Path(info['module']).stem}")
        cls = vars(module)[info["class_name"]]
        assert cls is LIBRARY[name] and cls.name == name and info["description"] == cls.description
        assert info["params"] == module.PARAMS and info["hooks"]
    assert isinstance(build("tabu", tenure=2), TabuMechanism)
    with pytest.raises(ValueError, match="unknown mechanism"):
        build("annealing")


# -- the generated-code policy, checked here independently of core.loader ------------------------------
ALLOWED_IMPORTS = {
    "core.mechanism", "core.records", "math", "random", "statistics", "collections", "itertools", "functools",
    "heapq", "bisect", "dataclasses", "typing", "enum", "re", "json", "copy", "operator", "string", "textwrap",
}
BANNED_NAMES = {"open", "eval", "exec", "compile", "getattr", "setattr", "delattr", "globals", "locals", "vars",
                "__import__", "input", "breakpoint", "exit", "quit", "memoryview", "type", "object"}


def policy_violations(source: str) -> list[str]:
    tree = ast.parse(source)
    found = []
    super_init = set()
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "__init__"
                and isinstance(node.func.value, ast.Call) and isinstance(node.func.value.func, ast.Name)
                and node.func.value.func.id == "super"):
            super_init.add(id(node.func))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if a.name not in ALLOWED_IMPORTS]
        elif isinstance(node, ast.ImportFrom):
            if node.level or node.module not in ALLOWED_IMPORTS:
                found.append(f"from {node.module} import")
        elif isinstance(node, ast.Name) and (node.id in BANNED_NAMES or node.id.startswith("__")):
            found.append(f"name {node.id}")
        elif isinstance(node, ast.Attribute) and node.attr.startswith("__") and id(node) not in super_init:
            found.append(f"attribute {node.attr}")
        elif isinstance(node, ast.FunctionDef) and node.name.startswith("__") and node.name != "__init__":
            found.append(f"def {node.name}")
    classes = [n for n in tree.body if isinstance(n, ast.ClassDef)]
    if len(classes) != 1 or classes[0].name.startswith("_") or [ast.unparse(b) for b in classes[0].bases] != ["Mechanism"]:
        found.append("not exactly one public Mechanism subclass")
    found += [f"public helper {n.name}" for n in tree.body
              if isinstance(n, ast.FunctionDef) and not n.name.startswith("_")]
    if not any(isinstance(n, ast.Assign) and ast.unparse(n.targets[0]) == "PARAMS" and isinstance(n.value, ast.Dict)
               for n in tree.body):
        found.append("no PARAMS dict literal")
    return found


@pytest.mark.parametrize("name", NAMES)
def test_template_module_passes_generated_code_policy(name):
    assert policy_violations(template_source(name)) == []


def test_policy_check_catches_forbidden_code():
    bad = "import os\nfrom core.mechanism import Mechanism\nPARAMS = {}\nclass A(Mechanism):\n    x = open.__doc__\n"
    assert {"import os", "name open", "attribute __doc__"} <= set(policy_violations(bad))


# -- rendering ------------------------------------------------------------------------------------------
RENDER_CASES = {
    "tabu": {"tenure": 3, "tabu_discards": False},
    "bandit": {"top_k": 1, "reward": "improvement", "exploration": 2},
    "orthogonal": {"patience": 2},
    "step_size": {"min_gain": 0.02, "cap": 4},
    "surrogate": {"space": '{"LR":{"kind":"float","low":0.0001,"high":1.0,"log":true,"value":0.01}}', "every": 2},
    "pattern": {"space": '{"DEPTH":{"kind":"int","low":1,"high":16,"value":4}}', "grow": 3},
    "multiscale": {"mode": "guidance", "large": 3},
}


def exec_rendered(source: str) -> list[type]:
    namespace: dict[str, Any] = {}
    exec(compile(source, "<rendered>", "exec"), namespace)  # the test may exec; templates may not
    return [v for v in namespace.values() if isinstance(v, type) and issubclass(v, Mechanism) and v is not Mechanism]


@pytest.mark.parametrize("name", NAMES)
def test_rendered_template_compiles_with_merged_params(name):
    params = RENDER_CASES[name]
    source = render_template(name, params)
    merged = {**TEMPLATES[name]["params"], **params}
    tree = ast.parse(source)
    literal = next(n.value for n in tree.body if isinstance(n, ast.Assign) and ast.unparse(n.targets[0]) == "PARAMS")
    assert ast.literal_eval(literal) == merged
    classes = exec_rendered(source)
    assert len(classes) == 1 and classes[0].name == name
    assert classes[0]().params == merged
    assert policy_violations(source) == []
    assert render_template(name) == template_source(name)


def test_render_template_keeps_comments_and_writes_floats_as_floats():
    source = render_template("step_size", {"cap": 4, "min_gain": 0.02})
    assert '"cap": 4.0,  # ... nor above this' in source
    assert '"min_gain": 0.02,  # relative gain' in source
    assert source.replace("4.0", "2.0").replace("0.02", "0.0") == template_source("step_size")


@pytest.mark.parametrize("name, params, message", [
    ("annealing", {}, "unknown template 'annealing'; known: bandit, multiscale, orthogonal, pattern, step_size, surrogate, tabu"),
    ("tabu", {"tenure": "8"}, "param 'tenure' must be int"),
    ("tabu", {"tenure": 8.0}, "param 'tenure' must be int"),
    ("tabu", {"tabu_discards": 1}, "param 'tabu_discards' must be bool"),
    ("tabu", {"colour": 1}, "has no param(s) colour"),
    ("step_size", {"cap": float("inf")}, "must be finite"),
    ("bandit", {"reward": None}, "param 'reward' must be str"),
])
def test_render_template_rejects_bad_requests_with_one_line(name, params, message):
    with pytest.raises(ValueError) as info:
        render_template(name, params)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_rendered_string_values_cannot_inject_code():
    source = render_template("bandit", {"reward": '"}\nimport os\nX = {"'})
    assert policy_violations(source) == []
    assert ast.literal_eval(
        next(n.value for n in ast.parse(source).body if isinstance(n, ast.Assign)
             and ast.unparse(n.targets[0]) == "PARAMS"))["reward"].startswith('"}')


# -- through the hot-loader, when core.loader exists ----------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_rendered_template_passes_core_loader(name, tmp_path):
    loader = pytest.importorskip("core.loader", reason="core.loader is not written yet")
    source = render_template(name, RENDER_CASES[name])
    loader.check_policy(source)  # raises PolicyViolation on the first broken rule
    probe = ctx(narrow_history(), search=ACTIVE)  # hooks are probed on a history where each one acts
    loaded = loader.MechanismLoader(tmp_path).load(source, params=RENDER_CASES[name], context=probe)
    assert loaded.name == name and loaded.class_name == TEMPLATES[name]["class_name"]
    assert loaded.hooks_overridden == TEMPLATES[name]["hooks"]
    assert loaded.instance.params == {**TEMPLATES[name]["params"], **RENDER_CASES[name]}


# -- inside a real controller: hooks are called, counted and take effect ------------------------------
class ListProposer(Proposer):
    def __init__(self, regions: list[str]) -> None:
        self.regions = list(regions)
        self.seen_feedback: list[tuple[str, ...]] = []

    def propose(self, ctx: ProposalContext) -> Proposal:
        self.seen_feedback.append(ctx.feedback)
        return proposal(self.regions.pop(0))


class TableExecutor(Executor):
    """Loss per region from a table (default 2.0, worse than the baseline's 1.0)."""

    def __init__(self, losses: dict[str, float]) -> None:
        self.losses = losses

    def execute(self, p: Proposal, ctx: ExecContext) -> ExecutionResult:
        loss = 1.0 if p.origin == "baseline" else self.losses.get(p.region, 2.0)
        return ExecutionResult(status="ok", metrics={"loss": loss})


def controller(tmp_path: Path, regions: list[str], losses: dict[str, float]) -> tuple[InnerLoopController, ListProposer]:
    proposer = ListProposer(regions)
    loop = InnerLoopController(run=RunDir(tmp_path / "run", fsync=False), proposer=proposer,
                               executor=TableExecutor(losses), evaluator=MetricEvaluator(metric="loss"))
    loop.ensure_baseline()
    return loop, proposer


def test_tabu_mechanism_blocks_repeat_inside_controller(tmp_path):
    loop, proposer = controller(tmp_path, ["MATRIX_LR:down", "MATRIX_LR:down", "DEPTH:up"], {})
    loop.attach(build("tabu"))
    first = loop.step()
    second = loop.step()
    assert first.status is Status.DISCARD
    assert second.proposal.region == "DEPTH:up"
    assert second.rejections == ("tabu: MATRIX_LR:down was discarded at iteration 1; try another region "
                                 "(tabu for 8 more iterations)",)
    assert proposer.seen_feedback[-1] == second.rejections  # the proposer was re-asked with the reason
    assert second.hook_calls["tabu"] == {"guidance": 1, "filter": 2, "observe": 1}
    assert not loop.mechanisms[0].calls["decide"]  # not overridden, so never called


def test_step_size_mechanism_overrides_keep_inside_controller(tmp_path):
    loop, _ = controller(tmp_path, ["LR:up", "WD:up"], {"LR:up": 0.999, "WD:up": 0.9})
    loop.attach(build("step_size", min_gain=0.01))
    small, large = loop.step(), loop.step()
    assert (small.status, small.decided_by) == (Status.DISCARD, "step_size")
    assert (large.status, large.decided_by) == (Status.KEEP, "decider")
    assert loop.mechanisms[0].instance.scale == 1.5
