"""The one controller every level runs: propose → execute → evaluate → keep/discard.

Level 1 runs it over task changes, Level 2 runs the same class over mechanisms (a candidate is a
mechanism's source; executing it means attaching it to the running Level-1 controller for a cycle).
So a mechanism written for Level 1 — a tabu list, a bandit — can be attached to Level 2 unchanged.

Every iteration ends in exactly one journaled :class:`TrialRecord`, whatever failed on the way: the
record is built and written after any ordinary exception (status CRASH, with the traceback tail).
Only a stop request (:class:`RunStopped`: a spent budget or a provider outage; Ctrl-C, SIGTERM) or a run directory that can no longer
be written (:class:`~core.errors.RunDirError`: a full or read-only disk) leaves the iteration unrecorded; its
candidate was journaled as ``proposal`` before executing, and ``resume`` re-executes that same
candidate, so no finished trial is lost and none is run twice.

No trial is wasted: a candidate whose configuration (:meth:`InnerLoopController.config_key`) was
already measured in this loop, or that the executor finds infeasible, is refused before it runs and
the proposer is asked again with the reason. Keep/discard rests on :class:`~core.plugins.Evidence`
(every score of the candidate's and the incumbent's configuration, one per training seed, and the
measured noise); a decider's ``retest`` makes the next iteration a *replicate* — the same
configuration on another seed — as do the baseline replicates a decider asks for. Both are derived
from the journaled history, so a resumed run repeats none.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from statistics import fmean
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from core.attachment import (  # noqa: F401 - re-exported: the names callers import from here
    TAIL_CHARS,
    AttachedMechanism,
    DetachCallback,
    MechanismSlots,
    hook_call_totals,
    hook_effect_totals,
    overridden_hooks,
    tail,
)
from core.errors import (
    ProviderError,
    ProviderOutage,
    ReplayMissError,
    RunDirError,
    RunStopped,
    StructuredOutputError,
    TrialsFailing,
)
from core.measurements import Measurements
from core.plugins import (
    Decider,
    Evaluator,
    Evidence,
    ExecContext,
    Executor,
    Proposer,
    StrictImprovement,
    pooled_noise,
)
from core.records import (
    BASELINE,
    REPLICATE,
    Constraints,
    EvalInput,
    Evaluation,
    ExecutionResult,
    Guidance,
    Proposal,
    ProposalContext,
    Status,
    TrialRecord,
    canonical_json,
)
from core.state import RunDir

if TYPE_CHECKING:
    from core.batch import BatchRunner

log = logging.getLogger(__name__)

MAX_ARTIFACT_BYTES = 5_000_000
_RESULT_STATUS = {"crash": Status.CRASH, "fail": Status.FAIL, "timeout": Status.TIMEOUT}


class InnerLoopController(MechanismSlots, Measurements):
    """Runs iterations of one loop and journals each one.

    ``search`` (the Level-1.5 search configuration: a typed pydantic model such as
    :class:`core.search.SearchConfig`, or a plain dict) and ``outer_guidance`` are set by the
    outer loop between cycles; both reach the proposer through :class:`ProposalContext` and nothing
    else. ``lessons`` derives lesson text from the history (it is recomputed, never stored).
    """

    def __init__(
        self,
        *,
        run: RunDir,
        proposer: Proposer,
        executor: Executor,
        evaluator: Evaluator,
        decider: Decider | None = None,
        loop: str = "inner",
        direction: Literal["minimize", "maximize"] = "minimize",
        max_reasks: int = 3,
        hook_timeout_s: float = 5.0,
        seed: int = 0,
        lessons: Callable[[tuple[TrialRecord, ...]], Iterable[str]] | None = None,
        max_provider_failures: int = 3,
        max_failed_in_a_row: int = 0,
        cycles: int | None = None,
    ) -> None:
        if max_reasks < 0:
            raise ValueError("max_reasks must be >= 0")
        self.run = run
        self.loop = loop
        self.proposer = proposer
        self.executor = executor
        self.evaluator = evaluator
        self.decider = decider or StrictImprovement()
        self.direction = direction
        self.max_reasks = max_reasks
        self.hook_timeout_s = hook_timeout_s
        self.seed = seed
        self.lessons = lessons
        self.max_provider_failures = max_provider_failures
        self.max_failed_in_a_row = max_failed_in_a_row  # executed trials failing in a row before a stop (0 = never)
        # set when each iteration runs a whole cycle (Level 2): the run's number of cycles. A near-tie
        # is then retested in the next cycle, while the run has one
        self.cycles = cycles
        self.search: BaseModel | dict[str, Any] = {}
        self.outer_guidance = Guidance()
        self.mechanisms: list[AttachedMechanism] = []
        self.on_detach: list[DetachCallback] = []
        self._calls: dict[str, Counter] = defaultdict(Counter)
        self._effects: dict[str, Counter] = defaultdict(Counter)
        self.history: list[TrialRecord] = []
        self._incumbent: TrialRecord | None = None
        self._per_cycle: Counter = Counter()
        # what was measured, derived from the history: config key -> executed trials / scores (one
        # per training seed); the incumbent's accumulated changes (the default config key's base)
        self._runs: Counter = Counter()
        self._scores: dict[str, list[float]] = defaultdict(list)
        self._first: dict[str, TrialRecord] = {}
        self._incumbent_changes: dict[str, Any] = {}
        self._budget: tuple[int, int] | None = None  # (cycle, iterations) of the cycle being run
        self.batch: BatchRunner | None = None  # set by the schedule for --parallel K > 1 (core.batch)
        for event in run.journal.events("trial", loop=loop):
            self._remember(TrialRecord.model_validate(event["record"]))
        last_proposal = run.journal.last("proposal", loop=loop)
        self._pending = last_proposal if last_proposal and last_proposal["iteration"] == len(self.history) else None

    # -- state derived from the history --------------------------------------------------------------
    def _remember(self, record: TrialRecord) -> None:
        self.history.append(record)
        key = record.info.get("config_key")
        if key and record.proposal is not None and record.status is not Status.REJECTED:
            self._runs[key] += 1
            self._first.setdefault(key, record)
            if record.finished_ok and record.score is not None:
                self._scores[key].append(record.score)
        if record.status is Status.KEEP:
            self._incumbent = record
            if record.proposal is not None:
                self._incumbent_changes = {**self._incumbent_changes, **record.proposal.changes}
        if (record.proposal is None or not record.proposal.is_baseline) and not self._lost(record):
            self._per_cycle[record.cycle] += 1

    def _lost(self, record: TrialRecord) -> bool:
        """An iteration lost to the provider (no candidate was ever executed) does not use up the
        cycle's budget: it is tried again, and an outage stops the run after
        ``max_provider_failures`` in a row. With that stop switched off (0) it counts, so a
        provider that never comes back cannot loop forever."""
        return self.max_provider_failures > 0 and bool(record.info.get("provider_failure"))

    def completed(self, cycle: int) -> int:
        """Iterations of ``cycle`` that count against its budget (not the baseline, not lost ones)."""
        return self._per_cycle[cycle]

    @property
    def incumbent_record(self) -> TrialRecord | None:
        """The last kept record (the baseline until something beats it)."""
        return self._incumbent

    @property
    def best_score(self) -> float | None:
        """The incumbent's score: the mean over every training seed its configuration was measured on
        (with one measurement, exactly its score)."""
        record = self.incumbent_record
        if record is None:
            return None
        scores = self._scores.get(record.info.get("config_key") or "")
        return fmean(scores) if scores else record.score

    @property
    def incumbent(self) -> str | None:
        record = self.incumbent_record
        return record.artifact if record else None

    def records(self, cycle: int | None = None, *, include_baseline: bool = False) -> list[TrialRecord]:
        return [
            r for r in self.history
            if (cycle is None or r.cycle == cycle)
            and (include_baseline or r.proposal is None or not r.proposal.is_baseline)
        ]

    # -- one iteration -------------------------------------------------------------------------------
    def context(self, iteration: int, cycle: int, *, guidance: Guidance | None = None,
                feedback: tuple[str, ...] = (), pending: tuple[Proposal, ...] = ()) -> ProposalContext:
        history = tuple(self.history)
        return ProposalContext(
            loop=self.loop, iteration=iteration, cycle=cycle, history=history, best_score=self.best_score,
            incumbent=self.incumbent, direction=self.direction, search=_search_json(self.search),
            guidance=guidance or self.outer_guidance,
            lessons=tuple(self.lessons(history)) if self.lessons else (),
            feedback=feedback, seed=self.seed * 1_000_003 + iteration, pending=pending,
        )

    def _guided_context(self, iteration: int, cycle: int, *, pending: tuple[Proposal, ...] = ()) -> ProposalContext:
        base = self.context(iteration, cycle, pending=pending)  # a batch's candidates in flight (core.batch)
        texts = [self.outer_guidance.text] if self.outer_guidance.text else []
        constraints: Constraints = self.outer_guidance.constraints
        for attached, out in list(self._hook("guidance", base)):
            if out is None:
                continue
            if out.text:
                texts.append(f"[{attached.name}] {out.text}")
            merged = constraints.merge(out.constraints)
            if out.text or merged != constraints:
                self._effects[attached.name]["guidance"] += 1  # it changed what the proposer is told
            constraints = merged
        return base.model_copy(update={"guidance": Guidance(text="\n".join(texts), constraints=constraints)})

    def _propose(self, ctx: ProposalContext) -> tuple[Proposal | None, tuple[str, ...]]:
        feedback: list[str] = list(ctx.feedback)  # a batch re-asks with its refusals (a duplicate in flight)
        refused: set[str] = set()  # mechanisms whose candidate was refused: the proposer is asked instead
        vetoed: Proposal | None = None  # the last candidate only a mechanism's filter refused
        for _attempt in range(self.max_reasks + 1):
            asked = ctx.model_copy(update={"feedback": tuple(feedback)})
            candidate = None
            source = None
            for attached, out in self._hook("propose", asked, skip=refused):
                if out is not None:
                    source = attached.name
                    # bookkeeping is the controller's: no mechanism may pass its candidate off as the baseline
                    keep_origin = out.origin not in ("proposer", BASELINE, REPLICATE)
                    candidate = out if keep_origin else out.model_copy(update={"origin": attached.name})
                    self._effects[attached.name]["propose"] += 1  # it supplied the candidate
                    break
            if candidate is None:
                candidate = self.proposer.propose(asked)
            rejected = None
            # one mechanism at a time, each seeing the candidate as rewritten by the ones before it
            for attached in list(self.mechanisms):
                if "filter" not in attached.hooks or attached not in self.mechanisms or not attached.steers(asked):
                    continue
                ok, verdict = self._call(attached, "filter", candidate, asked)
                if not ok or verdict is None or verdict.action == "accept":
                    continue
                if verdict.action == "reject":
                    rejected = f"{attached.name}: {verdict.reason or 'rejected'}"
                    self._effects[attached.name]["filter"] += 1  # it refused the candidate
                    break
                if verdict.proposal is not None:
                    rewritten = verdict.proposal
                    if rewritten.is_baseline or rewritten.is_replicate:
                        rewritten = rewritten.model_copy(update={"origin": attached.name})
                    if rewritten.changes != candidate.changes or rewritten.payload != candidate.payload:
                        self._effects[attached.name]["filter"] += 1  # it rewrote the candidate
                    candidate = rewritten
            # no wasted trial, whoever proposed it: never a configuration already measured in this
            # loop, never one that breaks a known constraint (the proposer is asked again)
            waste = self._waste(candidate)
            if rejected is None and waste is None:
                return candidate, tuple(feedback)
            if rejected is not None and waste is None:
                vetoed = candidate
            feedback.append(rejected if rejected is not None else str(waste))
            if source is not None:
                refused.add(source)  # a mechanism that cannot see the constraint would offer it again
        if vetoed is not None:
            # a mechanism's refusal is a search preference, the controller's own checks are the hard
            # rules: rather than lose the iteration, run the last candidate only a filter refused
            feedback.append(f"every candidate was refused: ran the last one only a mechanism's filter refused "
                            f"({canonical_json(dict(vetoed.changes))}) rather than lose the trial")
            return vetoed, tuple(feedback)
        return None, tuple(feedback)

    def step(self, cycle: int = 0, *, baseline: bool = False) -> TrialRecord:
        iteration = len(self.history)
        self._calls = defaultdict(Counter)
        self._effects = defaultdict(Counter)
        started = time.monotonic()
        fields: dict[str, Any] = {"status": Status.CRASH}
        proposal: Proposal | None = None
        rejections: tuple[str, ...] = ()
        best_before = self.best_score
        parent = self.incumbent
        try:
            if baseline:
                ctx = self.context(iteration, cycle)
                proposal = Proposal(origin=BASELINE, hypothesis="unchanged starting point", region=BASELINE)
            elif self._pending is not None and self._pending["iteration"] == iteration:
                ctx = self.context(iteration, cycle)
                proposal = Proposal.model_validate(self._pending["proposal"])
                rejections = tuple(self._pending.get("rejections", ()))
                for name, counts in self._pending.get("hook_calls", {}).items():
                    self._calls[name].update(counts)
                for name, counts in self._pending.get("hook_effects", {}).items():
                    self._effects[name].update(counts)
                log.info("loop %s: resuming iteration %d with its journaled candidate", self.loop, iteration)
            elif (owed := self._owed_replicate(cycle)) is not None:
                ctx = self.context(iteration, cycle)
                proposal = owed  # a replicate is the controller's: no proposer, no filter
            else:
                ctx = self._guided_context(iteration, cycle)
                proposal, rejections = self._propose(ctx)
            self._pending = None
            if proposal is None:
                fields = {"status": Status.REJECTED, "error": "no runnable candidate: every one was filtered out, "
                          "infeasible or already measured (nothing was executed)"}
            else:
                self.run.journal.append({
                    "type": "proposal", "loop": self.loop, "iteration": iteration, "cycle": cycle,
                    "proposal": proposal.model_dump(mode="json"), "rejections": list(rejections),
                    "hook_calls": {k: dict(v) for k, v in self._calls.items()},
                    "hook_effects": {k: dict(v) for k, v in self._effects.items() if v},
                }, fsync=False)  # losing it on a crash only means the candidate is proposed again
                fields = self._execute_and_judge(proposal, ctx, iteration, cycle, parent)
        except (RunStopped, KeyboardInterrupt, SystemExit) as exc:
            self.run.journal.append({"type": "stopped", "loop": self.loop, "iteration": iteration,
                                     "reason": f"{type(exc).__name__}: {exc}"})
            raise
        except RunDirError:  # the run cannot record anything: stop; resume re-runs this iteration
            raise
        except Exception as exc:
            log.warning("loop %s iteration %d crashed: %s", self.loop, iteration, exc)
            fields = {"status": Status.CRASH, "error": f"{type(exc).__name__}: {exc}",
                      "log_tail": tail(traceback.format_exc())}
            if _is_outage(exc):
                fields["info"] = {"provider_failure": True}
        record = TrialRecord(
            loop=self.loop, iteration=iteration, cycle=cycle, proposal=proposal, best_before=best_before,
            parent_artifact=parent, rejections=rejections, duration_s=round(time.monotonic() - started, 4),
            **fields,
        )
        record = self._finish(record)
        self._stop_on_outage()
        self._stop_on_failures()
        return record

    def _stop_on_failures(self) -> None:
        """After ``max_failed_in_a_row`` executed trials in a row failed (crash, fail, timeout), stop
        cleanly: spending the rest of the budget on a target that does not run teaches nothing."""
        n = self.max_failed_in_a_row
        executed = [r for r in self.history if r.proposal is not None and not r.proposal.is_baseline
                    and r.status is not Status.REJECTED and not r.info.get("provider_failure")]
        recent = executed[-n:] if n > 0 else []
        if n > 0 and len(recent) == n and recent[-1] is self.history[-1] \
                and all(r.status in (Status.CRASH, Status.FAIL, Status.TIMEOUT) and not r.info.get("stopped_early")
                        for r in recent):  # a trial stopped early by a learning-curve rule ran fine
            last = recent[-1]
            reason = (f"the last {n} trials all failed (last: {last.status.value}: {last.error[:200]}); the run is "
                      f"stopped with its state saved: fix the target (see {self.run.trial_dir(self.loop, last.iteration)}"
                      "/run.log) and `resume` it")
            self.run.journal.append({"type": "stopped", "loop": self.loop, "iteration": len(self.history),
                                     "reason": f"TrialsFailing: {reason}"})
            raise TrialsFailing(reason)

    def _stop_on_outage(self) -> None:
        """After ``max_provider_failures`` iterations in a row lost to the provider, stop cleanly."""
        n = self.max_provider_failures
        recent = self.history[-n:] if n > 0 else []
        if n > 0 and len(recent) == n and all(r.info.get("provider_failure") for r in recent):
            reason = (f"the provider failed {n} iterations in a row (last: {recent[-1].error[:200]}); "
                      "the run is stopped with its state saved: `resume` it when the provider is back")
            self.run.journal.append({"type": "stopped", "loop": self.loop, "iteration": len(self.history),
                                     "reason": f"ProviderOutage: {reason}"})
            raise ProviderOutage(reason)

    def _execute_and_judge(self, proposal: Proposal, ctx: ProposalContext, iteration: int, cycle: int,
                           parent: str | None) -> dict[str, Any]:
        key = self.config_key(proposal)
        seed = self._replicate_seed(key) if proposal.is_replicate else None
        exec_ctx = self.exec_context(iteration, cycle, parent, seed=seed)
        # with a pool (core.batch), a single trial (the baseline) runs in a slot too: same environment
        result: ExecutionResult = (self.batch.execute_one(proposal, exec_ctx) if self.batch
                                   else self.executor.execute(proposal, exec_ctx))
        fields = self._measured(result)
        fields["info"] = {**fields["info"], **self.trial_info(proposal, key, seed)}
        return self._judge(proposal, ctx, iteration, cycle, fields)

    def exec_context(self, iteration: int, cycle: int, parent: str | None, *, seed: int | None = None) -> ExecContext:
        return ExecContext(loop=self.loop, iteration=iteration, cycle=cycle, run_dir=self.run.path,
                           trial_dir=self.run.trial_dir(self.loop, iteration), incumbent=parent, seed=seed)

    def trial_info(self, proposal: Proposal, key: str | None, seed: int | None) -> dict[str, Any]:
        """What the record's ``info`` says about the trial itself: its configuration key and, for a
        replicate, which measurement it repeats and on which training seed."""
        info: dict[str, Any] = {"config_key": key} if key else {}
        if proposal.is_replicate and key:
            info["replicate_of"] = self._first[key].iteration if key in self._first else None
            if self.cycles is None:  # a Level-2 retest runs on the next cycle's draws, not on a seed
                info["seed"] = seed
        return info

    def _measured(self, result: ExecutionResult) -> dict[str, Any]:
        """A record's fields from an execution result, before the keep/discard decision: with a
        ``status`` when it did not run to a result, else with its ``score`` (core.batch journals
        these as a trial finishes and decides later, in proposal order)."""
        fields: dict[str, Any] = {"metrics": dict(result.metrics), "artifact": result.artifact,
                                  "log_tail": tail(result.log_tail), "info": dict(result.detail)}
        if result.status != "ok":
            fields["status"] = _RESULT_STATUS[result.status]
            fields["error"] = str(result.detail.get("error", result.status))
            return fields
        evaluation: Evaluation = self.evaluator.evaluate(
            EvalInput(metrics=dict(result.metrics), artifact_text=self._artifact_text(result.artifact))
        )
        fields["score"] = evaluation.score
        fields["details"] = dict(evaluation.details)
        return fields

    def _judge(self, proposal: Proposal, ctx: ProposalContext, iteration: int, cycle: int,
               fields: dict[str, Any]) -> dict[str, Any]:
        """Keep or discard measured ``fields`` against the incumbent now (decider, then mechanisms)."""
        if "status" in fields:
            return fields
        info = dict(fields.get("info", {}))
        key = info.get("config_key")
        incumbent_key = self.incumbent_record.info.get("config_key") if self.incumbent_record else None
        if proposal.is_replicate and key and key == incumbent_key:
            # the incumbent re-measured (a baseline replicate): nothing to decide, the estimate moves
            scores = [*self._scores[key], fields["score"]]
            groups = [v for k, v in self._scores.items() if k != key] + [scores]
            info["decision"] = {"verdict": "replicate", "incumbent": scores, "noise": pooled_noise(groups)}
            return {**fields, "info": info, "status": Status.DISCARD, "decided_by": "replicate"}
        evidence = self._evidence(key, incumbent_key, fields["score"], cycle)
        verdict, detail = ("keep", {"rule": "baseline"}) if proposal.is_baseline else self.decider.judge(evidence, ctx)
        keep = verdict == "keep"
        decided_by = "decider"
        draft = TrialRecord(loop=self.loop, iteration=iteration, cycle=cycle, proposal=proposal,
                            status=Status.KEEP if keep else Status.DISCARD, best_before=self.best_score, **fields)
        if not proposal.is_baseline:
            for attached, answer in self._hook("decide", draft, ctx):
                if answer is not None:
                    if answer != keep:
                        self._effects[attached.name]["decide"] += 1  # it overrode the decider
                        verdict = "keep" if answer else "discard"  # an override cancels a retest too
                    keep, decided_by = answer, attached.name
                    break
        else:
            keep = True  # the baseline is the starting incumbent by definition
        if not proposal.is_baseline:
            info["decision"] = {**detail, "verdict": verdict, "candidate": list(evidence.candidate),
                                "incumbent": list(evidence.incumbent)}
        fields = {**fields, "info": info}
        fields["status"] = Status.KEEP if keep else Status.DISCARD
        fields["decided_by"] = decided_by
        return fields

    def _evidence(self, key: str | None, incumbent_key: str | None, score: float, cycle: int) -> Evidence:
        """Every measurement of the candidate's and the incumbent's configuration, with this trial's."""
        candidate = (*self._scores.get(key or "", ()), score) if key else (score,)
        incumbent = tuple(self._scores.get(incumbent_key or "", ())) or \
            ((self.best_score,) if self.best_score is not None else ())
        groups = [v for k, v in self._scores.items() if k != key] + ([list(candidate)] if key else [])
        if self.cycles is not None:  # one iteration a cycle: a retest takes the next cycle
            budget_left = cycle + 1 < self.cycles
        else:
            budget_left = self._budget is None or self._budget[0] != cycle or self._per_cycle[cycle] + 1 < self._budget[1]
        # a batch (core.batch) plans its own iterations: it does not run replicates (yet), so no retest there
        can_retest = self.executor.seeded and key is not None and budget_left and self.batch is None
        return Evidence(candidate=candidate, incumbent=incumbent, noise=pooled_noise(groups),
                        can_retest=can_retest, direction=self.direction)

    def _artifact_text(self, artifact: str | None) -> str | None:
        if not artifact:
            return None
        path = self.run.abs(artifact)
        if not path.is_file() or path.stat().st_size > MAX_ARTIFACT_BYTES:
            return None
        return path.read_text(encoding="utf-8", errors="replace")

    def _finish(self, record: TrialRecord) -> TrialRecord:
        # the incumbent's estimate after this record: a keep's (or a re-measured incumbent's) mean over seeds
        best_after = record.best_before
        if record.score is not None and (record.status is Status.KEEP or record.decided_by == "replicate"):
            key = record.info.get("config_key")
            best_after = fmean([*self._scores.get(key, ()), record.score]) if key else record.score
        record = record.model_copy(update={"best_after": best_after})
        try:
            self.executor.settle(record)
        except Exception as exc:
            log.warning("loop %s: settle failed: %s", self.loop, exc)
            record = record.model_copy(update={"error": f"{record.error} settle failed: {exc}".strip()})
        for _ in self._hook("observe", record):
            pass
        record = record.model_copy(update={"hook_calls": {k: dict(v) for k, v in self._calls.items()},
                                           "hook_effects": {k: dict(v) for k, v in self._effects.items() if v}})
        self.run.journal.append({"type": "trial", "loop": self.loop, "record": record.model_dump(mode="json")})
        self._remember(record)
        return record

    # -- running -------------------------------------------------------------------------------------
    def ensure_baseline(self, cycle: int = 0) -> TrialRecord:
        """Measure the unchanged starting point once (iteration 0); on resume, return the journaled one."""
        for record in self.history:
            if record.proposal is not None and record.proposal.is_baseline:
                return record
        if self.history:
            raise RuntimeError(f"loop {self.loop!r} has records but no baseline")
        return self.step(cycle, baseline=True)

    def run_cycle(self, cycle: int, iterations: int, *, deadline: float | None = None,
                  on_record: Callable[[TrialRecord], None] | None = None) -> list[TrialRecord]:
        """Run until ``cycle`` holds ``iterations`` counted records (:meth:`completed`: a resumed cycle
        runs only what is missing), or until ``deadline`` (a ``time.monotonic()`` value) has passed."""
        self._budget = (cycle, iterations)  # a near-tie is retested only while the cycle has room
        while self._per_cycle[cycle] < iterations:
            if deadline is not None and time.monotonic() >= deadline:
                log.info("loop %s: wall-time limit reached in cycle %d", self.loop, cycle)
                break
            try:
                # K trials at a time with a batch runner (core.batch), else one
                records = self.batch.step(cycle, iterations - self._per_cycle[cycle]) if self.batch else [self.step(cycle)]
            except (ProviderOutage, TrialsFailing):
                if on_record and self.history:  # the crash that triggered the stop is shown too
                    on_record(self.history[-1])
                raise
            for record in records:
                if on_record:
                    on_record(record)
        return self.records(cycle)


def _search_json(search: BaseModel | dict[str, Any]) -> dict[str, Any]:
    """The search configuration as the context carries it (JSON: it also crosses to workers)."""
    return search.model_dump(mode="json") if isinstance(search, BaseModel) else dict(search)


def _is_outage(exc: BaseException) -> bool:
    """A provider that could not be reached or refused service (not one that answered badly)."""
    return isinstance(exc, ProviderError) and not isinstance(exc, (StructuredOutputError, ReplayMissError))
