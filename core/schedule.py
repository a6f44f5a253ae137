"""The one bilevel schedule every domain runs: :class:`BilevelRun`.

For ``outer_cycles`` cycles of ``inner_budget`` Level-1 iterations per loop, after one baseline each::

    cycle 0:      [L2 baseline = the cycle with the parent set]  inner cycle 0  [L1.5 patch]
    cycle c ≥ 1:  [L2 step: design → load → install → inner cycle c → keep/revert/retest]
                  (retest: an inconclusive design of cycle c-1 runs again — no designer call)
                  [L1.5 verdict on the patch that governed cycle c]  [L1.5 patch]

Both outer levels are scored by the cycle they govern, kept or reverted by a pluggable decider
(default :class:`core.level2.BeatsParent`): a Level-1.5 patch by the cycle's gain per iteration
against the cycle before (:func:`core.level2.cycle_gain`); a Level-2 design, where the domain's
installer can split a cycle (train_opt, script_opt), by a paired trial inside its cycle — in each
pair of iterations it steers one and its parent set the other (:func:`core.level2.paired_gains`),
against a noise margin over an arm's iterations, an inconclusive trial retested in the next cycle
under the noise-aware rule — else (article_opt) by its cycle against the cycle before. A level that
is off does nothing at its slot, so every group of an ablation counts trials the same way. All
state — histories, incumbents, the configuration in force, installed plug-ins — lives in the
journal; :meth:`BilevelRun.resume` rebuilds it and runs only what is missing. A budget, a provider outage or the wall-time limit stops the run cleanly (``stopped`` in
the summary); ``resume`` continues it, and may raise those limits (:data:`core.settings.RESUME_OVERRIDES`).

With ``parallel`` K > 1 (or a GPU list, a thread budget, the Ray executor) every Level-1 loop runs its
cycles in batches of K trials on one shared pool (:mod:`core.batch`, :mod:`core.pool`); Levels 1.5 and
2 are unchanged: they see the cycle's records, in proposal order, as they see a K = 1 cycle's.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from core.batch import BatchRunner
from core.domain import ConfigLevel, Domain, RunContext
from core.errors import ConfigError, ProviderOutage, RunStopped, UserError
from core.inner_loop import InnerLoopController
from core.level2 import (
    LOOP,
    BeatsParent,
    CycleTrialExecutor,
    GainOverParent,
    cycle_gain,
    outer_margin,
    reinstall_kept,
)
from core.llm_client import Budget, UsageLedger, make_client
from core.loader import MechanismLoader
from core.mechanisms.tabu import TabuMechanism
from core.plugins import Decider
from core.pool import TrialPool, make_pool
from core.records import ProposalContext, Status, TrialRecord
from core.settings import RunSettings, validate, with_overrides
from core.state import RunDir

log = logging.getLogger(__name__)

RecordCallback = Callable[[str, TrialRecord], None]
EventCallback = Callable[[dict[str, Any]], None]
FlightCallback = Callable[[str, tuple[int, ...], int], None]
VERDICT = "level15_verdict"


class BilevelRun:
    """Owns one run directory. Create with :meth:`start` or :meth:`resume`, then :meth:`run`.

    A domain's session subclasses it and names its :class:`~core.domain.Domain` in ``domain_cls``.
    ``on_record(loop, record)`` sees every finished record of every level, ``on_event(event)`` every
    Level-1.5 patch, rejection and verdict.
    """

    domain_cls: ClassVar[type[Domain]]
    outer_decider: Decider = BeatsParent()

    def __init__(self, run: RunDir, settings: RunSettings) -> None:
        self.rundir = run
        self.settings = settings
        self.domain_cls.register_offline()
        journal = run.journal
        self.ledger = UsageLedger.from_records(
            [{k: v for k, v in e.items() if k not in ("type", "seq", "ts", "record")} | {"ts": 0.0}
             for e in journal.events("llm_call")],
            sink=lambda rec: journal.append({"type": "llm_call", **{k: v for k, v in rec.items() if k != "ts"}}),
        )
        budget = Budget(max_cost_usd=settings.max_cost_usd, max_calls=settings.max_calls)
        common: dict[str, Any] = {"ledger": self.ledger, "budget": budget, "seed": settings.seed,
                                  "record_to": run.path / "cassette.jsonl" if settings.record_cassette else None}
        if settings.request_timeout_s is not None:
            common["timeout_s"] = settings.request_timeout_s
        self.clients: dict[str, Any] = {}
        self.pool: TrialPool | None = None
        self.on_flight: FlightCallback | None = None  # (loop, iterations in flight, finished in the batch)
        try:
            for level, (provider, model) in settings.client_ids().items():
                self.clients[level] = self.make_client(provider, model, level=level, **common)
            self.on_record: RecordCallback | None = None
            self.on_event: EventCallback | None = None
            self._deadline: float | None = None
            self.domain = self.domain_cls(RunContext(run=run, settings=settings, clients=self.clients))
            self.loops: dict[str, InnerLoopController] = self.domain.loops
            if getattr(settings, "decision", "strict") == "noise-aware" and self.outer_decider is BilevelRun.outer_decider:
                # both outer levels keep a candidate only when its cycle beats the parent's beyond the noise
                self.outer_decider = BeatsParent(margin=lambda: outer_margin(self.loops.values(), settings.inner_budget))
            self.pool = make_pool(settings)
            if self.pool is not None:
                for ctl in self.loops.values():
                    ctl.batch = BatchRunner(ctl, self.pool, size=settings.parallel, on_flight=self._flight)
            # the configuration in force is installed whatever the levels; only Level 1.5 changes it
            self.config: ConfigLevel | None = self.domain.config_level()
            if self.config is not None:
                self.config.install(self.config_in_force())
            self.level2: InnerLoopController | None = None
            self._build_level2()
        except BaseException:
            self._close_clients()
            raise

    # -- construction ----------------------------------------------------------------------------
    def make_client(self, provider: str, model: str | None, **kwargs: Any) -> Any:
        """The client factory (a session module may route it through its own name, so a test or an
        embedding can swap it)."""
        return make_client(provider, model, **kwargs)

    def _build_level2(self) -> None:
        parts = self.domain.level2() if "2" in self.settings.levels else None
        if parts is None:
            return
        loader = MechanismLoader(self.rundir.path, contract=parts.installer.contract)
        self.loader = loader
        decider = self.outer_decider
        if parts.installer.paired:
            if self.settings.inner_budget < 2:
                parts.installer.paired = False  # one iteration a cycle cannot be split between two arms
            elif isinstance(decider, BeatsParent) and decider.margin is not None:
                # a paired trial compares two arms of about half a cycle each: the noise over an arm
                half = max(1, self.settings.inner_budget // 2)
                # an inconclusive trial is tried again in the next cycle (once) rather than reverted
                decider = BeatsParent(margin=lambda: outer_margin(self.loops.values(), half), max_retests=1)
        self.level2 = InnerLoopController(
            run=self.rundir, loop=LOOP, direction="maximize", seed=self.settings.seed,
            proposer=parts.designer, evaluator=GainOverParent(), decider=decider,
            executor=CycleTrialExecutor(loader=loader, installer=parts.installer, run_cycle=self._trial_cycle,
                                        gain=self.cycle_gain),
            hook_timeout_s=self.settings.hook_timeout_s, max_provider_failures=self.settings.max_provider_failures,
            cycles=self.settings.outer_cycles,
        )
        # Level 2 searches with the same mechanisms as Level 1: a tabu list over designs means a
        # reverted design is not proposed again in this run.
        self.level2.attach(TabuMechanism(tenure=10_000), name="tabu")
        reinstall_kept(self.level2, loader, parts.installer, self.rundir)

    @classmethod
    def start(cls, settings: RunSettings, run_dir: Path | None = None) -> BilevelRun:
        """Check the inputs, create the run directory, copy the inputs, journal ``run_started``."""
        cls.domain_cls.check(settings)  # user errors before anything is written
        cls.domain_cls.register_offline()
        for provider, model in settings.client_ids().values():  # a bad provider or missing key: fail now
            make_client(provider, model).close()
        run = RunDir.create(run_dir, prefix=cls.domain_cls.name.split("_")[0])
        try:
            extra = cls.domain_cls.prepare(settings, run)
            run.write_json("settings.json", settings.model_dump(mode="json"))
            session = cls(run, settings)
            run.journal.append({"type": "run_started", "domain": cls.domain_cls.name,
                                "settings": settings.model_dump(mode="json"), **extra,
                                "python": sys.version.split()[0]})
            return session
        except BaseException:
            run.close()
            if not run.journal.path.exists():  # nothing started: leave no partial run behind
                shutil.rmtree(run.path, ignore_errors=True)
            raise

    @classmethod
    def resume(cls, run_dir: Path, overrides: dict[str, Any] | None = None) -> BilevelRun:
        """Reopen a run. ``overrides`` (``None`` values ignored) may raise the limits a stopped run
        hit, rewriting ``settings.json`` atomically and journaling ``settings_changed``."""
        # everything that can refuse the folder is checked before it is opened: opening takes its lock
        # and trims a torn last journal line, which a folder that is not this domain's run must not see
        path = RunDir.check(run_dir)
        try:
            data = json.loads((path / "settings.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UserError(f"{path} does not hold a run of {cls.domain_cls.name} (settings.json unreadable: "
                            f"{exc}); pass the folder a {cls.domain_cls.name} run printed") from None
        try:
            settings = validate(cls.domain_cls.Settings, data)
        except ConfigError as exc:
            raise UserError(f"{path} does not hold a run of {cls.domain_cls.name} ({exc}); pass the folder a "
                            f"{cls.domain_cls.name} run printed") from None
        run = RunDir.open(path)
        try:
            settings, changes = with_overrides(settings, {k: v for k, v in (overrides or {}).items() if v is not None})
            if changes:
                run.write_json("settings.json", settings.model_dump(mode="json"))
                run.journal.append({"type": "settings_changed", "changes": changes,
                                    "previous": {k: data.get(k) for k in changes}})
            session = cls(run, settings)
            run.journal.append({"type": "run_resumed"})
            return session
        except BaseException:
            run.close()
            raise

    # -- measurements ----------------------------------------------------------------------------
    def cycle_gain(self, cycle: int) -> float | None:
        return cycle_gain(self.loops.values(), cycle)

    def _notify(self, loop: str, record: TrialRecord) -> None:
        if self.on_record is not None:
            self.on_record(loop, record)

    def _flight(self, loop: str, flying: tuple[int, ...], finished: int) -> None:
        if self.on_flight is not None:
            self.on_flight(loop, flying, finished)

    def _event(self, event: dict[str, Any] | None) -> None:
        if event is not None and self.on_event is not None:
            self.on_event(event)

    def _inner_cycle(self, cycle: int) -> None:
        for ctl in self.loops.values():
            ctl.run_cycle(cycle, self.settings.inner_budget, deadline=self._deadline,
                          on_record=lambda r, loop=ctl.loop: self._notify(loop, r))

    def _trial_cycle(self, cycle: int) -> None:
        """The inner cycle a Level-2 record is measured on. Cut short by the wall-time limit, it is not
        judged on the part that ran: the run stops with the design's iteration unrecorded, and
        ``resume`` finishes the cycle under the same design (same arms) and judges it then."""
        self._inner_cycle(cycle)
        if not self._cycle_done(cycle):
            raise RunStopped("wall-time limit reached")

    def _cycle_done(self, cycle: int) -> bool:
        return all(ctl.completed(cycle) >= self.settings.inner_budget for ctl in self.loops.values())

    # -- Level 1.5 -------------------------------------------------------------------------------
    def config_in_force(self, before_seq: int | None = None) -> Any:
        """The configuration in force: the last applied patch, or the one a verdict restored."""
        assert self.config is not None
        config = self.config.initial()
        for event in self.rundir.journal.events():
            if before_seq is not None and event["seq"] >= before_seq:
                break
            if event["type"] == self.config.applied:
                config = self.config.config_of(event)
            elif event["type"] == VERDICT and not event["kept"]:
                config = self.config.load(event["restored"])
        return config

    def _level15(self, cycle: int) -> None:
        assert self.config is not None
        journal = self.rundir.journal
        patch = journal.last(self.config.applied, cycle=cycle - 1)
        if patch is not None and journal.last(VERDICT, cycle=cycle - 1) is None and self._cycle_done(cycle):
            self._verdict(patch, cycle)
        last = cycle == self.settings.outer_cycles - 1
        if not last and journal.last(self.config.applied, cycle=cycle) is None \
                and journal.last(self.config.rejected, cycle=cycle) is None:
            self.config.patch(cycle, self.config_in_force())
            self.config.install(self.config_in_force())
            self._event(journal.last(self.config.applied, cycle=cycle) or journal.last(self.config.rejected, cycle=cycle))

    def _verdict(self, patch: dict[str, Any], cycle: int) -> None:
        """Score the patch journaled after ``cycle - 1`` by the cycle it governed; keep or revert it."""
        assert self.config is not None
        gain, parent = self.cycle_gain(cycle) or 0.0, self.cycle_gain(cycle - 1) or 0.0
        score = round(gain - parent, 9)
        ctx = ProposalContext(loop="config", iteration=cycle, cycle=cycle, direction="maximize")
        keep = bool(self.outer_decider.decide(score, 0.0, ctx))
        event: dict[str, Any] = {"type": VERDICT, "cycle": cycle - 1, "governed": cycle, "kept": keep,
                                 "score": score, "gain": gain, "parent_gain": parent,
                                 "decided_by": type(self.outer_decider).__name__}
        threshold = getattr(self.outer_decider, "threshold", None)
        if callable(threshold):  # the evidence: the margin beyond noise the gain had to beat
            event["margin"] = threshold()
        if not keep:
            event["restored"] = self.config.dump(self.config_in_force(before_seq=patch["seq"]))
        self._event(self.rundir.journal.append(event))
        if not keep:
            self.config.install(self.config_in_force())

    # -- running ---------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        s = self.settings
        if s.wall_time_s:
            self._deadline = time.monotonic() + s.wall_time_s
        stopped = None
        try:
            for key, ctl in self.loops.items():
                fresh = not ctl.history
                baseline = ctl.ensure_baseline()
                if fresh:
                    self._notify(ctl.loop, baseline)
                if baseline.status is not Status.KEEP:
                    raise UserError(self.domain.baseline_error(key, baseline))
            for cycle in range(s.outer_cycles):
                if self._deadline is not None and time.monotonic() >= self._deadline:
                    stopped = "wall-time limit reached"
                    break
                if self.level2 is not None and not any(r.cycle == cycle for r in self.level2.history):
                    before = len(self.level2.history)
                    try:
                        record = self.level2.ensure_baseline(cycle=0) if cycle == 0 else self.level2.step(cycle)
                    except ProviderOutage:
                        if len(self.level2.history) > before:  # the designer's crash that triggered the stop
                            self._notify(LOOP, self.level2.history[-1])
                        raise
                    self._notify(LOOP, record)
                self._inner_cycle(cycle)
                if not self._cycle_done(cycle):
                    stopped = "wall-time limit reached"
                    break
                if self.rundir.journal.last("cycle_end", cycle=cycle) is None:
                    self.rundir.journal.append({
                        "type": "cycle_end", "cycle": cycle, "gain": self.cycle_gain(cycle),
                        "best": {key: ctl.best_score for key, ctl in self.loops.items()},
                        **self.domain.cycle_info(cycle)})
                if self.config is not None and "1.5" in s.levels:
                    self._level15(cycle)
        except RunStopped as exc:
            stopped = str(exc)
        return self.finalize(stopped)

    def finalize(self, stopped: str | None = None) -> dict[str, Any]:
        complete = stopped is None and all(self._cycle_done(c) for c in range(self.settings.outer_cycles))
        self.domain.finish()
        summary = self.domain.summarize()
        summary["stopped"] = stopped
        summary["complete"] = complete
        self.rundir.write_json("summary.json", summary)
        best = summary["best"] if "best" in summary else {k: ctl.best_score for k, ctl in self.loops.items()}
        self.rundir.journal.append({"type": "run_finished" if complete else "run_stopped", "reason": stopped,
                                    "best": best})
        return summary

    def _close_clients(self) -> None:
        for client in self.clients.values():
            client.close()
        if self.pool is not None:
            self.pool.close()
            self.pool = None

    def close(self) -> None:
        self._close_clients()
        self.rundir.close()
