"""Batches: K trials of one loop in flight at once, decided in proposal order.

One batch of a loop (:meth:`BatchRunner.step`), with ``i0`` the loop's next iteration:

1. **propose** up to K candidates, iterations ``i0 … i0+K-1``. Each is asked for with the batch's
   earlier candidates in :attr:`ProposalContext.pending` (mechanisms see work in flight), and a
   candidate equal to one of them (same changes and payload) is refused and asked for again with the
   reason (a configuration already measured is refused by the controller, as with K = 1). A replicate
   the controller owes (a baseline replicate measuring the noise) takes the batch's first slot, at most
   one per batch (its training seed follows the measurements decided so far). Each is journaled
   (``proposal``) before anything runs; a slot that got no candidate (every one refused, or the
   proposer failed) is journaled at once as ``executed`` with its final fields;
2. **execute** them in the pool (:mod:`core.pool`), all built on the incumbent at the batch's start;
   each result is evaluated and journaled (``executed``, fsync) the moment it arrives, in whatever
   order trials finish;
3. **decide** in proposal order: the decider (and mechanisms' ``decide``) sees the incumbent as the
   earlier trials of the batch left it, ``settle`` and ``observe`` run, the ``trial`` record is
   journaled — exactly as a K = 1 iteration ends. So a run's decisions do not depend on which trial
   finished first, only on what each measured. A batch does not ask for near-tie retests (the
   decider sees ``can_retest`` false); N failed trials in a row stop the run as with K = 1.

Resume (a SIGKILL mid-batch): the journal's ``proposal`` and ``executed`` events past the last
``trial`` rebuild the batch; only candidates without an ``executed`` event run again (a finished
trial is never lost, none runs twice), then the batch is decided as above. The budget counts the
same as K = 1: a batch is never larger than what the cycle still needs.
"""

from __future__ import annotations

import logging
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from core.errors import RunDirError, RunStopped
from core.inner_loop import InnerLoopController, _is_outage, tail
from core.plugins import ExecContext
from core.pool import Job, TrialPool
from core.records import ExecutionResult, Proposal, ProposalContext, Status, TrialRecord

log = logging.getLogger(__name__)
EXECUTED = "executed"
FlightCallback = Callable[[str, tuple[int, ...], int], None]  # (loop, iterations in flight, finished so far)


@dataclass
class Planned:
    """One slot of a batch: its candidate (``None``: it got none) and, once run, its fields."""

    iteration: int
    proposal: Proposal | None
    ctx: ProposalContext
    rejections: tuple[str, ...] = ()
    calls: dict[str, dict[str, int]] = field(default_factory=dict)
    effects: dict[str, dict[str, int]] = field(default_factory=dict)
    fields: dict[str, Any] | None = None
    duration_s: float = 0.0
    key: str | None = None  # the configuration's key (core.inner_loop.InnerLoopController.config_key)
    seed: int | None = None  # a replicate's training seed


def _crash(exc: BaseException) -> dict[str, Any]:
    fields: dict[str, Any] = {"status": Status.CRASH.value, "error": f"{type(exc).__name__}: {exc}",
                              "log_tail": tail(traceback.format_exc())}
    if _is_outage(exc):
        fields["info"] = {"provider_failure": True}
    return fields


def _json_fields(fields: dict[str, Any]) -> dict[str, Any]:
    out = dict(fields)
    if isinstance(out.get("status"), Status):
        out["status"] = out["status"].value
    return out


class BatchRunner:
    """Runs one controller's iterations ``size`` at a time on ``pool``; set as ``ctl.batch``."""

    def __init__(self, ctl: InnerLoopController, pool: TrialPool, *, size: int,
                 on_flight: FlightCallback | None = None) -> None:
        if size < 1:
            raise ValueError("size must be >= 1")
        self.ctl = ctl
        self.pool = pool
        self.size = size
        self.on_flight = on_flight
        self._replayed = False

    # -- 1. propose ------------------------------------------------------------------------------
    def _journaled(self, i0: int, cycle: int) -> list[Planned]:
        """On resume: the batch the journal holds past the last decided trial (once per runner)."""
        if self._replayed:
            return []
        self._replayed = True
        ctl = self.ctl
        proposals = {e["iteration"]: e for e in ctl.run.journal.events("proposal", loop=ctl.loop) if e["iteration"] >= i0}
        executed = {e["iteration"]: e for e in ctl.run.journal.events(EXECUTED, loop=ctl.loop) if e["iteration"] >= i0}
        planned: list[Planned] = []
        iteration = i0
        while iteration in proposals or iteration in executed:
            event = proposals.get(iteration) or executed[iteration]
            raw = proposals[iteration]["proposal"] if iteration in proposals else None
            proposal = Proposal.model_validate(raw) if raw is not None else None
            pending = tuple(p.proposal for p in planned if p.proposal is not None)
            done = executed.get(iteration)
            planned.append(self._keyed(Planned(
                iteration=iteration, proposal=proposal,
                ctx=ctl.context(iteration, event.get("cycle", cycle), pending=pending),
                rejections=tuple(event.get("rejections", ())), calls=dict(event.get("hook_calls", {})),
                effects=dict(event.get("hook_effects", {})),
                fields=dict(done["fields"]) if done else None, duration_s=done.get("duration_s", 0.0) if done else 0.0)))
            iteration += 1
        if planned:
            log.info("loop %s: resuming a batch of %d (%d already executed)", ctl.loop, len(planned),
                     sum(p.fields is not None for p in planned))
        return planned

    def _keyed(self, slot: Planned) -> Planned:
        """``slot`` with its configuration key and, for a replicate, its training seed: derived from
        the history at the batch's start, so a resumed batch gets the same ones."""
        if slot.proposal is not None:
            slot.key = self.ctl.config_key(slot.proposal)
            slot.seed = self.ctl._replicate_seed(slot.key) if slot.proposal.is_replicate else None
        return slot

    def _propose_distinct(self, ctx: ProposalContext, keys: set[str]) -> tuple[Proposal | None, tuple[str, ...]]:
        """The controller's proposal, re-asked (at most ``max_reasks`` times) while it is the same
        candidate (or gives the same configuration) as one already in the batch."""
        ctl = self.ctl
        feedback: tuple[str, ...] = ()
        for _ in range(ctl.max_reasks + 1):
            proposal, feedback = ctl._propose(ctx.model_copy(update={"feedback": feedback}))
            if proposal is None:
                return None, feedback
            key = ctl.config_key(proposal)
            if all(p.digest() != proposal.digest() for p in ctx.pending) and (key is None or key not in keys):
                return proposal, feedback
            feedback = (*feedback, f"batch: the same candidate ({proposal.key()}: {dict(proposal.changes)}) is "
                                   "already in flight in this batch; propose a different one")
        return None, feedback

    def _plan(self, cycle: int, k: int) -> list[Planned]:
        ctl = self.ctl
        i0 = len(ctl.history)
        planned = self._journaled(i0, cycle)
        while len(planned) < k:
            iteration = i0 + len(planned)
            ctl._calls, ctl._effects = defaultdict(Counter), defaultdict(Counter)
            pending = tuple(p.proposal for p in planned if p.proposal is not None)
            ctx: ProposalContext | None = None
            owed = ctl._owed_replicate(cycle) if not planned else None  # the controller's, no proposer
            try:
                if owed is not None:
                    ctx, proposal, rejections = ctl.context(iteration, cycle), owed, ()
                else:
                    ctx = ctl._guided_context(iteration, cycle, pending=pending)  # guidance hooks see them too
                    proposal, rejections = self._propose_distinct(ctx, {p.key for p in planned if p.key})
                fields = None if proposal is not None else \
                    {"status": Status.REJECTED.value, "error": "no runnable candidate: every one was filtered out, "
                     "infeasible, already measured or already in flight (nothing was executed)"}
            except (RunStopped, KeyboardInterrupt, SystemExit) as exc:
                ctl.run.journal.append({"type": "stopped", "loop": ctl.loop, "iteration": iteration,
                                        "reason": f"{type(exc).__name__}: {exc}"})
                raise
            except RunDirError:
                raise
            except Exception as exc:  # the proposer broke: this slot is a crash, the batch is what it has
                log.warning("loop %s iteration %d: proposing crashed: %s", ctl.loop, iteration, exc)
                proposal, rejections, fields = None, (), _crash(exc)
            if ctx is None:
                ctx = ctl.context(iteration, cycle, pending=pending)
            slot = self._keyed(Planned(iteration=iteration, proposal=proposal, ctx=ctx, rejections=tuple(rejections),
                                       calls={n: dict(c) for n, c in ctl._calls.items()},
                                       effects={n: dict(c) for n, c in ctl._effects.items() if c}, fields=fields))
            event = {"loop": ctl.loop, "iteration": iteration, "cycle": cycle, "batch": i0,
                     "rejections": list(slot.rejections), "hook_calls": slot.calls, "hook_effects": slot.effects}
            if proposal is not None:
                ctl.run.journal.append({"type": "proposal", **event, "proposal": proposal.model_dump(mode="json")},
                                       fsync=False)  # the executed event that follows is fsynced
            else:
                ctl.run.journal.append({"type": EXECUTED, **event, "fields": fields, "duration_s": 0.0})
            planned.append(slot)
            if fields is not None and fields.get("status") == Status.CRASH.value:
                break  # a broken proposer (an outage?) is not asked again in this batch
        return planned

    # -- 2. execute ------------------------------------------------------------------------------
    def _execute(self, planned: list[Planned], cycle: int, parent: str | None) -> None:
        ctl = self.ctl
        todo = [p for p in planned if p.fields is None]
        if not todo:
            return
        by_iteration = {p.iteration: p for p in todo}
        jobs = [Job(key=p.iteration, proposal=p.proposal, ctx=ctl.exec_context(p.iteration, cycle, parent, seed=p.seed))
                for p in todo if p.proposal is not None]
        flying = set(by_iteration)
        self._flight(flying, len(planned) - len(todo))
        stop: BaseException | None = None
        results = self.pool.run(ctl.executor, jobs)
        try:
            for done in results:
                slot = by_iteration[done.key]
                if isinstance(done.exception, RunStopped):
                    stop = done.exception  # a budget spent inside a trial: stop; the rest are cancelled
                    break
                if done.result is None:
                    fields = {"status": Status.CRASH.value, "error": done.error.splitlines()[0] if done.error else "crash",
                              "log_tail": tail(done.error)}
                    if done.exception is not None and _is_outage(done.exception):
                        fields["info"] = {"provider_failure": True}
                else:
                    try:
                        fields = ctl._measured(done.result)
                    except Exception as exc:
                        fields = _crash(exc)
                info = {**dict(fields.get("info") or {}), **ctl.trial_info(slot.proposal, slot.key, slot.seed)}
                if done.slot is not None:  # where it ran, its thread budget: part of the run's identity
                    info["slot"] = done.slot.describe()
                fields["info"] = info  # its configuration key (computed on the incumbent it is built on), seed
                slot.fields = _json_fields(fields)
                slot.duration_s = round(done.seconds, 4)
                ctl.run.journal.append({"type": EXECUTED, "loop": ctl.loop, "iteration": slot.iteration,
                                        "cycle": cycle, "fields": slot.fields, "duration_s": slot.duration_s},
                                       fsync=True)  # a finished trial survives a SIGKILL from here on
                flying.discard(slot.iteration)
                self._flight(flying, len(planned) - len(flying))
        except (KeyboardInterrupt, SystemExit) as exc:
            stop = exc
        finally:
            results.close()  # cancels what still runs (its trial process group is killed)
        if stop is not None:
            ctl.run.journal.append({"type": "stopped", "loop": ctl.loop, "iteration": min(flying, default=len(ctl.history)),
                                    "reason": f"{type(stop).__name__}: {stop}"})
            raise stop

    def execute_one(self, proposal: Proposal, exec_ctx: ExecContext) -> ExecutionResult:
        """One execution in the pool, for the controller's own :meth:`~InnerLoopController.step`
        (the baseline): it runs in a slot like every batched trial, and its record says which."""
        results = self.pool.run(self.ctl.executor, [Job(key=exec_ctx.iteration, proposal=proposal, ctx=exec_ctx)])
        try:
            done = next(results)
        finally:
            results.close()
        if done.result is None:
            if done.exception is not None:
                raise done.exception
            raise RuntimeError(done.error)
        if done.slot is None:
            return done.result
        return done.result.model_copy(update={"detail": {**dict(done.result.detail), "slot": done.slot.describe()}})

    def _flight(self, flying: set[int], finished: int) -> None:
        if self.on_flight is not None:
            self.on_flight(self.ctl.loop, tuple(sorted(flying)), finished)

    # -- 3. decide -------------------------------------------------------------------------------
    def step(self, cycle: int, remaining: int) -> list[TrialRecord]:
        """One batch of at most ``min(size, remaining)`` iterations; returns their records in order."""
        ctl = self.ctl
        parent = ctl.incumbent
        planned = self._plan(cycle, max(1, min(self.size, remaining)))
        self._execute(planned, cycle, parent)
        records = []
        for slot in planned:
            ctl._calls = defaultdict(Counter, {n: Counter(c) for n, c in slot.calls.items()})
            ctl._effects = defaultdict(Counter, {n: Counter(c) for n, c in slot.effects.items()})
            best_before = ctl.best_score
            fields = dict(slot.fields or {})
            if slot.proposal is not None and "status" not in fields:
                try:
                    fields = ctl._judge(slot.proposal, slot.ctx, slot.iteration, cycle, fields)
                except (RunStopped, KeyboardInterrupt, SystemExit):
                    raise  # the executed event stays: resume decides it
                except Exception as exc:
                    fields = _crash(exc)
            record = TrialRecord(loop=ctl.loop, iteration=slot.iteration, cycle=slot.ctx.cycle, proposal=slot.proposal,
                                 best_before=best_before, parent_artifact=parent, rejections=slot.rejections,
                                 duration_s=slot.duration_s, **fields)
            records.append(ctl._finish(record))
            ctl._stop_on_outage()
            ctl._stop_on_failures()
        return records
