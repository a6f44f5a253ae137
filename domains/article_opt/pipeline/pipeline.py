"""The pipeline: an ordered list of stages, run in two phases, with validation, one retry and
hot injection of generated stages.

- **Phases.** Stages before ``assessment`` form the *propose* phase (Level 1's proposer runs them
  and journals their outputs as the candidate); ``assessment`` and everything after it form the
  *execute* phase (the executor runs them on the journaled candidate). A resumed iteration
  therefore re-runs only the execute phase of the candidate it had already proposed.
- **Validation and retry.** A shipped stage whose output fails its schema (after the client's own
  repair round) or a check in :mod:`.validate` is run once more with the error in
  ``ctx.retry_error``; a second failure raises :class:`StageFailure`, which ends the iteration as a
  crash with its reason, the working article untouched.
- **Generated stages** (Level 2) run under a deadline. One that raises, overruns or returns the
  wrong type is *ejected* — removed from the pipeline, reported through ``on_event`` with its
  traceback — and the pass goes on without it, as with the parent pipeline.
- **Overrides** (Level 1.5) are per-stage instruction texts handed to a stage as ``ctx.guidance``.
"""

from __future__ import annotations

import copy
import logging
import time
import traceback
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Literal

from core.deadline import call_with_deadline
from core.errors import HookTimeout, RunStopped
from domains.article_opt.pipeline.contract import Findings, Stage, StageContext
from domains.article_opt.pipeline.remote import RemoteStage
from domains.article_opt.prompts import render

log = logging.getLogger(__name__)

EXECUTE_FROM = "assessment"
CUSTOM_PURPOSE = "article.custom_stage"
ERROR_CHARS = 600

Phase = Literal["propose", "execute", "all"]
Origin = Literal["shipped", "generated"]


class StageFailure(Exception):
    """A shipped stage produced no usable output in two attempts."""

    def __init__(self, stage: str, reason: str, result: PassResult | None = None) -> None:
        super().__init__(f"stage {stage!r} failed twice: {reason}")
        self.stage = stage
        self.reason = reason
        self.result = result  # the pass up to the failure (calls, failures), for the journal


@dataclass
class Slot:
    stage: Stage
    origin: Origin = "shipped"
    digest: str | None = None
    after: str | None = None

    @property
    def name(self) -> str:
        return type(self.stage).name


@dataclass
class PassResult:
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: Counter = field(default_factory=Counter)
    failures: list[dict[str, Any]] = field(default_factory=list)
    ejected: list[dict[str, Any]] = field(default_factory=list)
    stages: list[str] = field(default_factory=list)


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= ERROR_CHARS else text[: ERROR_CHARS - 3] + "..."


class Pipeline:
    """Ordered stages plus the per-stage overrides of the outer loop."""

    def __init__(self, stages: list[Stage], *, llm: Any = None, stage_timeout_s: float = 10.0,
                 on_event: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.slots: list[Slot] = [Slot(stage=s) for s in stages]
        self.llm = llm
        self.stage_timeout_s = stage_timeout_s
        self.on_event = on_event
        self.overrides: dict[str, str] = {}
        self.calls: Counter = Counter()
        self._tags: dict[str, Any] = {}
        names = self.names
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate stage names in {names}")

    # -- structure ------------------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return [slot.name for slot in self.slots]

    def slot(self, name: str) -> Slot | None:
        return next((s for s in self.slots if s.name == name), None)

    def inject_stage(self, stage: Stage, *, after: str, origin: Origin = "generated",
                     digest: str | None = None) -> None:
        """Insert ``stage`` right after the stage named ``after`` (before ``revision`` at the latest)."""
        if not isinstance(stage, Stage):
            raise TypeError(f"{type(stage).__name__} is not a Stage")
        name = type(stage).name
        if isinstance(stage, RemoteStage):
            stage.timeout_s = self.stage_timeout_s  # enforced by killing its worker
        if name in self.names:
            raise ValueError(f"a stage named {name!r} is already in the pipeline")
        if after not in self.names:
            raise ValueError(f"cannot inject after {after!r}: the pipeline has {self.names}")
        index = self.names.index(after) + 1
        if "revision" in self.names:
            index = min(index, self.names.index("revision"))
        self.slots.insert(index, Slot(stage=stage, origin=origin, digest=digest, after=after))
        log.info("pipeline: injected %s stage %s after %s -> %s", origin, name, after, self.names)

    def remove_stage(self, name: str) -> Slot | None:
        slot = self.slot(name)
        if slot is None:
            return None
        if slot.origin == "shipped":
            raise ValueError(f"{name!r} is a shipped stage and cannot be removed")
        self.slots.remove(slot)
        _close(slot.stage)
        log.info("pipeline: removed stage %s -> %s", name, self.names)
        return slot

    def generated(self) -> list[Slot]:
        return [s for s in self.slots if s.origin == "generated"]

    def phase_slots(self, phase: Phase) -> list[Slot]:
        names = self.names
        cut = names.index(EXECUTE_FROM) if EXECUTE_FROM in names else len(names)
        if phase == "propose":
            return self.slots[:cut]
        if phase == "execute":
            return self.slots[cut:]
        return list(self.slots)

    # -- running -------------------------------------------------------------------------------------
    def run(self, base: StageContext, *, phase: Phase = "all",
            outputs: Mapping[str, Mapping[str, Any]] | None = None, tags: Mapping[str, Any] | None = None) -> PassResult:
        """Run one phase on ``base`` (``outputs`` seeds earlier stages' results, e.g. the journaled
        candidate; ``tags`` are added to every event reported). Raises :class:`StageFailure` when a
        shipped stage fails twice."""
        result = PassResult(outputs={k: dict(v) for k, v in (outputs or {}).items()})
        self._tags = dict(tags or {})
        try:
            for slot in self.phase_slots(phase):
                if self.slot(slot.name) is None:  # ejected earlier in this pass
                    continue
                result.stages.append(slot.name)
                try:
                    out = self._run_slot(slot, base, result)
                except StageFailure as exc:
                    exc.result = result
                    raise
                if out is not None:
                    result.outputs[slot.name] = out
            return result
        finally:
            self._tags = {}

    def _run_slot(self, slot: Slot, base: StageContext, result: PassResult) -> dict[str, Any] | None:
        name = slot.name
        # Generated code gets its own copy of earlier outputs, so it cannot edit the plan behind the
        # pipeline's back; shipped stages read the same read-only views.
        seen = copy.deepcopy(result.outputs) if slot.origin == "generated" else result.outputs
        ctx = replace(base, outputs=MappingProxyType({k: MappingProxyType(v) for k, v in seen.items()}),
                      guidance=self.overrides.get(name, ""), retry_error=None,
                      asker=self._asker(name, base.article) if slot.origin == "generated" else None)
        for attempt in (1, 2):
            self.calls[name] += 1
            result.calls[name] += 1
            started = time.monotonic()
            try:
                if isinstance(slot.stage, RemoteStage):  # generated code: in its sandboxed worker
                    out = slot.stage.run(ctx)
                elif slot.origin == "generated":
                    out = call_with_deadline(slot.stage.run, ctx, timeout_s=self.stage_timeout_s)
                else:
                    out = slot.stage.run(ctx)
                expected = type(slot.stage).output
                if not isinstance(out, expected):
                    raise TypeError(f"run() returned {type(out).__name__}, expected {expected.__name__}")
                return out.model_dump(mode="json")
            except (RunStopped, KeyboardInterrupt, SystemExit):
                raise
            except (Exception, HookTimeout) as exc:  # HookTimeout: a generated stage ran past its deadline
                error = _short(f"{type(exc).__name__}: {exc}")
                event = {"type": "stage_failed", "stage": name, "origin": slot.origin, "attempt": attempt,
                         "error": error, "seconds": round(time.monotonic() - started, 4)}
                result.failures.append(event)
                self._emit(event)
                if slot.origin == "generated":
                    self._eject(slot, error, traceback.format_exc()[-2000:], result)
                    return None
                if attempt == 2:
                    raise StageFailure(name, error) from exc
                log.info("stage %s failed (%s); retrying once with the error", name, error)
                ctx = replace(ctx, retry_error=error)
        return None  # unreachable

    def _eject(self, slot: Slot, error: str, tb: str, result: PassResult) -> None:
        self.slots.remove(slot)
        _close(slot.stage)
        event = {"type": "stage_ejected", "stage": slot.name, "digest": slot.digest, "reason": error,
                 "traceback_tail": tb}
        result.ejected.append(event)
        self._emit(event)
        log.warning("pipeline: ejected generated stage %s: %s", slot.name, error)

    def _asker(self, stage: str, article: str) -> Callable[[str], Findings] | None:
        if self.llm is None:
            return None

        def ask(instruction: str) -> Findings:
            messages = render("custom_stage", document=article, stage=stage, instruction=instruction)
            return self.llm.structured(purpose=CUSTOM_PURPOSE, schema=Findings, messages=messages,
                                       context={"stage": stage, "instruction": instruction, "article": article})
        return ask

    def _emit(self, event: dict[str, Any]) -> None:
        if self.on_event is not None:
            self.on_event({**event, **self._tags})


def _close(stage: Stage) -> None:
    """A removed generated stage's worker is killed: nothing of it keeps running."""
    if isinstance(stage, RemoteStage):
        stage.close()
