"""The bilevel groups on the cheap suite: the real train_opt loop, with each trial measured in-process.

A suite target is materialised as an autoresearch-style ``train.py`` (its UPPER_CASE constants, with
the search space's bounds in the comments) plus the fixed ``prepare.py`` that computes the metric
(:func:`materialize`; ``python -m domains.train_opt.cli --target-dir DIR`` runs it as a real target
in a child process per trial). For the ablation, :class:`SuiteDomain` is train_opt's domain — the
same proposer, Level 1.5, Level 2 and schedule — with two differences, both fairness rules:

* the parameter specs the researcher sees are the suite's search space (the same local box the
  references search), not train_opt's wide defaults;
* a trial is measured in-process (:class:`SuiteExecutor`: the edited ``train.py`` is written, its
  constants read back and measured with the run's training seed), so a trial costs milliseconds.

Groups: A = Level 1, B = 1 + 1.5, C = 1 + 1.5 + 2, D = 1 + 2, P = the placebo arm (Level 1 plus a
mechanism loaded as a generated one whose hooks are called and change nothing), S = group A under
strict improvement (every other group keeps by the default noise-aware rule).
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

from core.plugins import ExecContext, Executor
from core.records import ExecutionResult, Proposal, TrialRecord
from core.schedule import BilevelRun
from core.settings import validate
from core.space import SearchSpace
from domains.train_opt import target as tgt
from domains.train_opt.session import TrainDomain, TrainSettings
from experiments.suite import TARGETS, Crash, measure, space_for
from experiments.suite import functions as suite_functions

GROUPS = {"A": ("1",), "B": ("1", "1.5"), "C": ("1", "1.5", "2"), "D": ("1", "2"), "P": ("1",), "S": ("1",)}
STRICT = ("S",)  # group A under strict improvement instead of the default noise-aware keep rule
PLACEBO = "placebo"
# The placebo arm: Level 1 plus this mechanism, loaded as a generated one is (written, linted, run in
# a sandboxed worker, called through the proxy). Every hook is called and answers "no change", so
# its effect count must read 0: a difference from A would be the loading machinery's, not a mechanism's.
PLACEBO_SOURCE = '''"""Placebo: every hook is called, none changes anything."""

from core.mechanism import Mechanism


class Placebo(Mechanism):
    name = "placebo"
    description = "Hooks are called and answer with no change."

    def guidance(self, ctx):
        return None

    def filter(self, proposal, ctx):
        return None

    def decide(self, record, ctx):
        return None

    def observe(self, record):
        return None
'''


def train_py(name: str) -> str:
    space = space_for(name)
    lines = [f'"""Suite target {name!r}: {TARGETS[name]["fn"].__doc__.strip()}"""', "",
             "# " + "-" * 75, "# Hyperparameters (edit these directly)", "# " + "-" * 75, ""]
    for key, value in TARGETS[name]["start"].items():
        d = space.dim(key)
        bound = f"one of {list(d.choices)}" if d.kind == "choice" else f"{d.kind} in [{d.low:g}, {d.high:g}]"
        lines.append(f"{key} = {value!r}  # {bound}")
    lines += ["", "", 'if __name__ == "__main__":', "    import os", "", "    import prepare", "",
              f"    prepare.report({name!r}, {{k: v for k, v in globals().items() if k.isupper()}}, "
              'int(os.environ.get("BILEVEL_SEED", "0")))', ""]
    return "\n".join(lines)


PREPARE_TAIL = '''

def report(name, config, seed):
    """Print the autoresearch summary for one trial (or FAIL)."""
    try:
        value = measure(name, config, seed)
    except Crash as exc:
        print(f"crash: {exc}")
        print("FAIL")
        raise SystemExit(1) from None
    print("---")
    print(f"val_bpb: {value:.6f}")
'''


def materialize(name: str, folder: Path) -> Path:
    """Write the target as a folder with ``train.py`` (editable) and ``prepare.py`` (fixed)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.py").write_text(train_py(name), encoding="utf-8")
    prepare = Path(suite_functions.__file__).read_text(encoding="utf-8") + PREPARE_TAIL
    (folder / "prepare.py").write_text(prepare, encoding="utf-8")
    return folder


def narrowed_specs(specs: dict[str, tgt.ParamSpec], space: SearchSpace) -> dict[str, tgt.ParamSpec]:
    out = dict(specs)
    for d in space.dims:
        spec = specs[d.name]
        if d.kind == "choice":
            pattern = "^(" + "|".join(map(str, d.choices)) + ")$"
            out[d.name] = dataclasses.replace(spec, pattern=pattern, editable=True)
        else:
            out[d.name] = dataclasses.replace(spec, low=d.low, high=d.high, log=d.log or d.kind == "pow2",
                                              pow2=d.kind == "pow2", editable=True)
    return out


class SuiteExecutor(Executor):
    """Edit ``train.py`` as train_opt does, then measure its constants in-process (with the trial's
    training seed: a replicate's own, so the noise-aware rule can measure the noise)."""

    seeded = True

    def __init__(self, *, name: str, original: Path, specs: dict[str, tgt.ParamSpec], seed: int) -> None:
        self.name, self.original, self.specs, self.seed = name, original, specs, seed
        self.space = space_for(name)

    def _edited(self, proposal: Proposal, incumbent: str | None, run_dir: Path) -> str:
        parent = (run_dir / incumbent) if incumbent else self.original
        return tgt.apply_changes(parent.read_text(encoding="utf-8"), dict(proposal.changes), self.specs)

    def _config(self, source: str) -> dict[str, Any]:
        return {k: v for k, v in tgt.values(source).items() if k in self.space.names}

    def config_key(self, proposal: Proposal, incumbent: str | None, run_dir: Path) -> Any:
        try:
            return {"constants": self._config(self._edited(proposal, incumbent, run_dir))}
        except ValueError:
            return None

    def infeasible(self, proposal: Proposal, incumbent: str | None, run_dir: Path) -> str | None:
        """The suite's one static check (the search space's), before a trial is spent."""
        try:
            return self.space.feasible(self._config(self._edited(proposal, incumbent, run_dir)))
        except ValueError as exc:
            return f"edit rejected: {exc}"

    def execute(self, proposal: Proposal, ctx: ExecContext) -> ExecutionResult:
        try:
            edited = self._edited(proposal, ctx.incumbent, ctx.run_dir)
        except ValueError as exc:
            return ExecutionResult(status="crash", log_tail=f"edit rejected: {exc}",
                                   detail={"error": f"edit rejected: {exc}", "wasted": "invalid"})
        ctx.trial_dir.mkdir(parents=True, exist_ok=True)
        artifact = ctx.trial_dir / "train.py"
        artifact.write_text(edited, encoding="utf-8")
        rel = str(artifact.relative_to(ctx.run_dir))
        config = self._config(edited)
        reason = self.space.feasible(config)
        if reason is not None:
            return ExecutionResult(status="crash", artifact=rel, log_tail=f"infeasible: {reason}",
                                   detail={"error": f"infeasible: {reason}", "wasted": "infeasible"})
        seed = self.seed if getattr(ctx, "seed", None) is None else int(ctx.seed)  # a replicate's own seed
        try:
            value = measure(self.name, config, seed)
        except Crash as exc:
            return ExecutionResult(status="fail", artifact=rel, log_tail=f"crash: {exc}\nFAIL",
                                   detail={"error": f"FAIL: {exc}"})
        return ExecutionResult(status="ok", metrics={"val_bpb": value}, artifact=rel, log_tail=f"val_bpb: {value:.6f}")

    def settle(self, record: TrialRecord) -> None:
        return None


class SuiteSettings(TrainSettings):
    suite_target: str = "lr_bowl"


class SuiteDomain(TrainDomain):
    name = "suite_opt"
    Settings = SuiteSettings

    @classmethod
    def check(cls, settings: SuiteSettings) -> None:
        if settings.suite_target not in TARGETS:
            raise ValueError(f"unknown suite target {settings.suite_target!r}")

    @classmethod
    def prepare(cls, settings: SuiteSettings, run: Any) -> dict[str, Any]:
        folder = materialize(settings.suite_target, run.path / "target")
        shutil.copyfile(folder / "train.py", run.path / "original_train.py")
        return {"target": f"suite:{settings.suite_target}"}

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        space = space_for(ctx.settings.suite_target)
        narrowed = narrowed_specs(self.specs, space)
        self.specs.clear()
        self.specs.update(narrowed)  # the proposer holds this very dict: it now sees the suite's box
        self.inner.executor = SuiteExecutor(name=ctx.settings.suite_target, original=self.original,
                                            specs=self.specs, seed=ctx.settings.seed)


class SuiteSession(BilevelRun):
    domain_cls = SuiteDomain


def run_group(name: str, group: str, seed: int, *, cycles: int, budget: int, run_dir: Path) -> list[TrialRecord]:
    """One run of ``group`` on target ``name`` with seed ``seed``; returns its inner-loop records."""
    # every arm spends its whole budget (a reference never stops early), so the failing-run stop is off
    settings = validate(SuiteSettings, {"suite_target": name, "levels": GROUPS[group], "seed": seed,
                                        "inner_budget": budget, "outer_cycles": cycles, "max_failed_in_a_row": 0,
                                        "decision": "strict" if group in STRICT else "noise-aware"})
    session = SuiteSession.start(settings, run_dir)
    try:
        if group == "P":
            from core.loader import MechanismLoader

            loaded = MechanismLoader(run_dir).load(PLACEBO_SOURCE)
            session.domain.inner.attach(loaded.instance, name=PLACEBO, origin="generated", digest=loaded.digest)
        session.run()
        return list(session.domain.inner.history)
    finally:
        session.close()
