"""Reference searches on a train_opt target: what a user would run instead of an LLM researcher.

RANDOM, LOCAL (coordinate search with an adaptive step), TPE and CMAES are the searchers of
:mod:`experiments.suite.references`, run on the same :class:`core.space.SearchSpace` and under the
same :class:`~core.inner_loop.InnerLoopController`, executor, keep rule, budget and journal as
group A. Only the Level-1 proposer differs.

The space (:func:`target_space`) is a bounded local box around the target's own starting values —
not train_opt's wide validation ranges, on which a sampled model is mostly too large for the
machine and crashes:

* a positive integer may move within ×/÷ 2 of its start, a power of two within two doublings, a
  positive float within ×/÷ 4 on a log scale, a float that starts at zero within [0, 0.5] (clipped to
  its spec's range); a pattern-checked string is one of :data:`STRING_CHOICES` that match the pattern;
  tuples (``ADAM_BETAS``) stay at their start;
* the target's known constraint is built in: ``TOTAL_BATCH_SIZE`` is a multiple of
  ``DEVICE_BATCH_SIZE × MAX_SEQ_LEN`` (``MAX_SEQ_LEN`` read from the target's ``prepare.py``), so
  every proposal passes the one static feasibility check before it costs a trial.

A proposal is a **full configuration** of the searched constants (as a change to the incumbent,
which only ever differs in searched constants, so it is the same file as the configuration applied
to the baseline). The baseline is the first trial (Optuna's enqueued start), a configuration already
measured is never proposed again (the searcher is told its known value and asked again), and a
failed trial is told back (Optuna: as the worst value seen).

Resume is exact: a :class:`ReferenceProposer` rebuilt from a journal replays the history through a
fresh searcher with the same seed — asking before telling each recorded trial, as the uninterrupted
run did — so its internal state (random stream, step size, Optuna study) is the same as if it had
never stopped.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, ClassVar, Literal

from core.plugins import Proposer
from core.records import Proposal, ProposalContext, Status, TrialRecord
from core.space import Dim, MultipleOf, SearchSpace
from core.state import RunDir
from domains.train_opt.session import TrainSession, TrainSettings
from domains.train_opt.target import ParamSpec
from experiments.suite.references import MAX_PROPOSALS_PER_TRIAL, Searcher, make_searcher

Search = Literal["random", "local", "tpe", "cmaes"]
SEARCHES: tuple[Search, ...] = ("random", "local", "tpe", "cmaes")
# A small fixed set of strings for pattern-checked str constants (those that match the pattern are used).
STRING_CHOICES = ("L", "SL", "SSL", "SSSL", "SSSSSSSL", "LL", "SLSL", "SSLL", "S")
INT_FACTOR = 2.0
FLOAT_FACTOR = 4.0
POW2_SPAN = 2
ZERO_FLOAT_HIGH = 0.5
_SEQ_LEN = re.compile(r"^MAX_SEQ_LEN\s*=\s*(\d+)", re.MULTILINE)


def _dim(spec: ParamSpec) -> Dim | None:
    """The searched dimension of one constant, or None when it stays at its start."""
    value, low, high = spec.default, spec.low, spec.high
    if not spec.editable:
        return None
    if spec.kind == "bool":
        return Dim(spec.name, "choice", choices=(value, not value))
    if spec.kind == "str":
        valid = [c for c in STRING_CHOICES if spec.pattern and re.fullmatch(spec.pattern, c)]
        choices = tuple(dict.fromkeys([value, *valid]))
        return Dim(spec.name, "choice", choices=choices) if len(choices) > 1 else None
    if spec.kind == "int" and isinstance(value, int) and value > 0:
        if spec.pow2 and value & (value - 1) == 0:
            lo, hi = max(1, value >> POW2_SPAN), value << POW2_SPAN
            if low is not None:
                lo = max(lo, 1 << math.ceil(math.log2(max(low, 1))))
            if high is not None:
                hi = min(hi, 1 << math.floor(math.log2(high)))
            return Dim(spec.name, "pow2", low=lo, high=hi) if lo <= hi and lo != hi else None
        lo, hi = max(1, math.floor(value / INT_FACTOR)), math.ceil(value * INT_FACTOR)
        lo, hi = max(lo, math.ceil(low)) if low is not None else lo, min(hi, math.floor(high)) if high is not None else hi
        return Dim(spec.name, "int", low=lo, high=hi) if lo < hi else None
    if spec.kind == "float" and isinstance(value, (int, float)):
        if value > 0:
            lo, hi = value / FLOAT_FACTOR, value * FLOAT_FACTOR
            lo, hi = max(lo, low) if low is not None else lo, min(hi, high) if high is not None else hi
            return Dim(spec.name, "float", low=lo, high=hi, log=lo > 0) if lo < hi else None
        if value == 0:
            lo = 0.0 if low is None else max(0.0, float(low))
            hi = ZERO_FLOAT_HIGH if high is None else min(ZERO_FLOAT_HIGH, float(high))
            return Dim(spec.name, "float", low=lo, high=hi) if lo < hi else None
    return None  # tuples, negative starts: left at their start


def target_space(specs: dict[str, ParamSpec], target_dir: Path | None = None) -> SearchSpace:
    """The local box every reference searches on a train_opt target (see the module docstring)."""
    dims = tuple(d for d in (_dim(s) for s in specs.values()) if d is not None)
    if not dims:
        raise ValueError("the target has no searchable hyperparameters")
    names = {d.name for d in dims}
    constraints, fixed = [], {}
    seq_len = _max_seq_len(target_dir)
    if seq_len and {"TOTAL_BATCH_SIZE", "DEVICE_BATCH_SIZE"} <= names:
        constraints.append(MultipleOf("TOTAL_BATCH_SIZE", ("DEVICE_BATCH_SIZE", seq_len)))
    return SearchSpace(dims=dims, constraints=tuple(constraints), fixed=fixed)


def _max_seq_len(target_dir: Path | None) -> int | None:
    if target_dir is None or not (target_dir / "prepare.py").is_file():
        return None
    found = _SEQ_LEN.search((target_dir / "prepare.py").read_text(encoding="utf-8", errors="replace"))
    return int(found.group(1)) if found else None


def _config(record: TrialRecord, start: dict[str, Any]) -> dict[str, Any]:
    if record.proposal is None or record.proposal.is_baseline:
        return dict(start)
    return {**start, **{k: v for k, v in record.proposal.changes.items() if k in start}}


def _value(record: TrialRecord) -> float | None:
    ok = record.status in (Status.KEEP, Status.DISCARD) and record.score is not None and math.isfinite(record.score)
    return float(record.score) if ok else None


class ReferenceProposer(Proposer):
    """A reference searcher as a Level-1 proposer (see the module docstring for the rules)."""

    def __init__(self, *, search: Search, space: SearchSpace, start: dict[str, Any], seed: int) -> None:
        self.search, self.space, self.seed = search, space, seed
        self.start = {d.name: start[d.name] for d in space.dims}
        self._fresh()

    def _fresh(self) -> None:
        self.searcher: Searcher = make_searcher(self.search, self.space, self.start, self.seed)
        self.told = 0  # search records of the history already told to the searcher
        self.asked: dict[int, dict[str, Any]] = {}  # iteration -> the configuration proposed for it
        self.seen: dict[str, float | None] = {}
        self.incumbent = dict(self.start)

    def _key(self, config: dict[str, Any]) -> str:
        return json.dumps(config, sort_keys=True, default=str)

    def _next(self) -> dict[str, Any]:
        """Ask until a configuration not measured yet comes back (a duplicate costs a proposal, not a trial)."""
        for _ in range(MAX_PROPOSALS_PER_TRIAL):
            asked = self.searcher.ask(dict(self.incumbent))
            config = {d.name: asked[d.name] for d in self.space.dims}
            known = self._key(config)
            if known not in self.seen:
                return config
            self.searcher.tell(config, self.seen[known], False)
        return config  # the searcher is stuck on measured points; the loop's own duplicate rule decides

    def _sync(self, history: tuple[TrialRecord, ...]) -> None:
        baseline = next((r for r in history if r.proposal is not None and r.proposal.is_baseline), None)
        if baseline is not None and self._key(self.start) not in self.seen:
            self.seen[self._key(self.start)] = _value(baseline)
            self.searcher.tell(dict(self.start), _value(baseline), True)
        search = [r for r in history if r.proposal is not None and not r.proposal.is_baseline]
        if len(search) < self.told:  # a history that is not a continuation of the one told: start over
            self._fresh()
            return self._sync(history)
        for record in search[self.told:]:
            if record.iteration not in self.asked:
                self._next()  # replay: the uninterrupted run asked before it was told
            config = _config(record, self.start)
            config = {d.name: config[d.name] for d in self.space.dims}
            value = _value(record)
            improved = record.status is Status.KEEP
            self.seen[self._key(config)] = value
            if improved:
                self.incumbent = dict(config)
            self.searcher.tell(config, value, improved)
            self.told += 1

    def propose(self, ctx: ProposalContext) -> Proposal:
        self._sync(ctx.history)
        config = self._next()
        self.asked[ctx.iteration] = config
        return Proposal(changes=config, region=self.search, origin=self.search,
                        hypothesis=f"{self.search} reference: next configuration of all {len(config)} searched constants")


class BoxedSession(TrainSession):
    """Groups A-D on the ablation: the researcher's parameter ranges are the references' box.

    The researcher (LLM or offline stand-in) reads each constant's range from the specs; here they
    are narrowed to :func:`target_space`, so every arm of the ablation searches the same box. A
    constant the box leaves out (a tuple such as ``ADAM_BETAS``) stays editable for the researcher
    within its spec's range: the references never move it."""

    def __init__(self, run: RunDir, settings: TrainSettings) -> None:
        super().__init__(run, settings)
        from experiments.suite.groups import narrowed_specs

        target = run.path / "target"
        narrowed = narrowed_specs(self.specs, target_space(self.specs, target if target.is_dir() else None))
        self.specs.clear()
        self.specs.update(narrowed)  # the proposer holds this very dict


class ClassicSession(TrainSession):
    """A train_opt run whose Level-1 proposer is a reference search instead of the researcher.

    Everything else is :class:`TrainSession`: the run directory, the copied target, the baseline,
    the executor, the keep rule, the cycle schedule, ``resume``. No LLM is called (the session's
    client is the offline stand-in, built and never asked); ``classic.json`` in the run directory
    says which search ran and over which space.
    """

    search: ClassVar[Search]

    def __init__(self, run: RunDir, settings: TrainSettings) -> None:
        super().__init__(run, settings)
        target = run.path / "target"
        space = target_space(self.specs, target if target.is_dir() else None)
        if not (run.path / "classic.json").exists():
            run.write_json("classic.json", {
                "search": self.search, "llm": "none",
                "note": "reference search; the researcher client is never called",
                "space": [{"name": d.name, "kind": d.kind, "low": d.low, "high": d.high, "log": d.log,
                           "choices": list(d.choices)} for d in space.dims],
                "constraints": [f"{c.name} multiple of {' x '.join(map(str, c.factors))}" for c in space.constraints],
            })
        start = {n: s.default for n, s in self.specs.items()}
        self.inner.proposer = ReferenceProposer(search=self.search, space=space, start=start, seed=settings.seed)


def session_class(search: Search | None) -> type[TrainSession]:
    if search is None:
        return BoxedSession
    return type(f"{search.title()}Session", (ClassicSession,), {"search": search})
