"""The contract check of generated code: run inside its sandboxed worker (:mod:`core._worker`).

Before the live instance is made, the worker instantiates a probe instance and calls every hook once
on frozen probe records (the loop's current context when the caller gives one), checking each
return type. A failure is a :class:`ContractFailure` with a rule the designer is told
(``hook-raised: <hook>``, ``hook-return-type: <hook>``, ``contract: exactly one Mechanism
subclass``, ``name-not-str``).
"""

from __future__ import annotations

import traceback
from typing import Any

from core.mechanism import HOOKS, Mechanism
from core.records import (
    FilterVerdict,
    Guidance,
    Proposal,
    ProposalContext,
    Status,
    TrialRecord,
)

TAIL_CHARS = 2000


class ContractFailure(Exception):
    def __init__(self, rule: str, message: str, tb: str = ""):
        super().__init__(message)
        self.rule = rule
        self.tb = tb


def find_mechanism_class(module: Any, base: type = Mechanism) -> type:
    """The one public ``base`` subclass defined in ``module`` (imported bases don't count)."""
    label = base.__name__
    found = [
        obj
        for attr, obj in vars(module).items()
        if isinstance(obj, type)
        and issubclass(obj, base)
        and obj is not base
        and obj.__module__ == module.__name__
        and not attr.startswith("_")
    ]
    if len(found) != 1:
        names = ", ".join(sorted(c.__name__ for c in found)) or "none"
        raise ContractFailure(
            f"contract: exactly one {label} subclass",
            f"found {len(found)} public {label} subclasses ({names}); define exactly one",
        )
    return found[0]


def declared_name(cls: type, base: type = Mechanism) -> str:
    """The class's ``name`` attribute, or the class name when it keeps the base default."""
    name = getattr(cls, "name", None)
    if name is None or name == getattr(base, "name", None):
        return cls.__name__
    if not isinstance(name, str) or not name.strip():
        raise ContractFailure("name-not-str", f"{cls.__name__}.name must be a non-empty str, got {name!r}")
    return name


def hooks_overridden(cls: type, base: type = Mechanism, hooks: tuple[str, ...] | list[str] = HOOKS) -> list[str]:
    return [h for h in hooks if getattr(cls, h, None) is not getattr(base, h, None)]


def probe_records(context: dict | None) -> tuple[ProposalContext, Proposal, TrialRecord]:
    """Frozen inputs for the hook calls: the caller's context when given, else synthetic ones."""
    proposal = Proposal(changes={"LR": 0.01}, hypothesis="contract probe", region="LR:up")
    record = TrialRecord(
        loop="contract-check",
        iteration=0,
        status=Status.DISCARD,
        proposal=proposal,
        score=1.0,
        best_before=1.0,
        best_after=1.0,
        metrics={"score": 1.0},
    )
    if context is None:
        ctx = ProposalContext(
            loop="contract-check", iteration=1, cycle=0, history=(record,), best_score=1.0,
            search={"params": {"LR": {"low": 0.0001, "high": 1.0}}},
        )
        return ctx, proposal, record
    ctx = ProposalContext.model_validate(context)
    if ctx.history:
        record = ctx.history[-1]
        proposal = record.proposal or proposal
    return ctx, proposal, record


def _expect(hook: str, value: Any, types_: tuple[type, ...], label: str) -> None:
    if value is None or isinstance(value, types_):  # an int is not a bool: isinstance(1, bool) is False
        return
    raise ContractFailure(
        f"hook-return-type: {hook}",
        f"{hook}() returned {type(value).__name__}, expected {label} | None",
    )


def exercise_hooks(instance: Mechanism, context: dict | None) -> None:
    ctx, proposal, record = probe_records(context)
    calls: list[tuple[str, Any, tuple[type, ...], str]] = [
        ("guidance", lambda: instance.guidance(ctx), (Guidance,), "Guidance"),
        ("propose", lambda: instance.propose(ctx), (Proposal,), "Proposal"),
        ("filter", lambda: instance.filter(proposal, ctx), (FilterVerdict,), "FilterVerdict"),
        ("decide", lambda: instance.decide(record, ctx), (bool,), "bool"),
        ("observe", lambda: instance.observe(record), (), ""),
    ]
    for hook, call, types_, label in calls:
        try:
            value = call()
        except BaseException as exc:  # noqa: BLE001 - any escape is the mechanism's failure
            raise ContractFailure(f"hook-raised: {hook}", f"{hook}() raised {_one_line(exc)}",
                                  traceback.format_exc()) from None
        if hook == "observe":
            continue
        _expect(hook, value, types_, label)
        if isinstance(value, FilterVerdict) and value.action == "rewrite" and value.proposal is None:
            raise ContractFailure(f"hook-return-type: {hook}", "filter() returned a rewrite without a proposal")


def _one_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return " ".join(text.split())[:300]
