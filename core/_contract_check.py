"""Child-process side of the mechanism contract check (stage 4 of :mod:`core.loader`).

Run as ``python -s -B -m core._contract_check`` with a JSON request on stdin
(``{"path", "module_name", "params", "memory_bytes", "context", "contract"}``). It caps its own
address space, imports the mechanism file, finds the single public ``Mechanism`` subclass,
instantiates it and calls every hook once on frozen probe records, checking each return type.
A request with a ``contract`` (``{"base": "pkg.mod.Class", "check": "pkg.mod.function",
"hooks": [...]}``) checks a domain's own plug-in type instead: the one public subclass of ``base``
is instantiated and ``check(instance, context)`` is called; any exception fails the contract.
It writes one
JSON line to the *original* stdout, which it keeps on a private descriptor: the mechanism's own
``print`` output goes to ``/dev/null``, so it can neither flood the parent nor forge the result.

:func:`find_mechanism_class` and :func:`declared_name` are shared with the parent's import stage.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
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


def import_dotted(path: str) -> Any:
    """``"pkg.module.Attr"`` → the attribute (trusted project code named by the caller)."""
    module_path, _, attr = path.rpartition(".")
    return getattr(importlib.import_module(module_path), attr)


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


def check(request: dict) -> dict:
    """Run the whole check in this process; return the result dict (never raises)."""
    module_name = request["module_name"]
    try:
        try:
            spec = importlib.util.spec_from_file_location(module_name, request["path"])
            if spec is None or spec.loader is None:
                raise ContractFailure("import-failed", f"cannot load {request['path']}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            spec.loader.exec_module(module)
        except ContractFailure:
            raise
        except BaseException as exc:  # noqa: BLE001 - SystemExit at import is a failure too
            raise ContractFailure("import-failed", f"import raised {_one_line(exc)}",
                                  traceback.format_exc()) from None
        contract = request.get("contract")
        base = import_dotted(contract["base"]) if contract else Mechanism
        hooks = tuple(contract.get("hooks", ())) if contract else HOOKS
        cls = find_mechanism_class(module, base)
        name = declared_name(cls, base)
        try:
            instance = cls(**(request.get("params") or {}))
        except BaseException as exc:  # noqa: BLE001
            raise ContractFailure("instantiate-failed", f"{cls.__name__}(**params) raised {_one_line(exc)}",
                                  traceback.format_exc()) from None
        if contract and contract.get("check"):
            checker = import_dotted(contract["check"])
            try:
                checker(instance, request.get("context"))
            except BaseException as exc:  # noqa: BLE001 - any escape is the generated code's failure
                raise ContractFailure("check-failed", f"{contract['check']}() raised {_one_line(exc)}",
                                      traceback.format_exc()) from None
        elif not contract:
            exercise_hooks(instance, request.get("context"))
    except ContractFailure as failure:
        return {"ok": False, "rule": failure.rule, "message": str(failure), "traceback": failure.tb[-TAIL_CHARS:],
                "env_keys": sorted(os.environ)}
    return {
        "ok": True,
        "class_name": cls.__name__,
        "name": name,
        "hooks_overridden": hooks_overridden(cls, base, hooks),
        "env_keys": sorted(os.environ),
    }


def _one_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return " ".join(text.split())[:300]


def _limit_resources(memory_bytes: int | None) -> None:
    try:
        import resource
    except ImportError:  # not POSIX: the timeout is the only guard
        return
    for limit, value in ((resource.RLIMIT_AS, memory_bytes), (resource.RLIMIT_CORE, 0)):
        if value is None:
            continue
        try:
            resource.setrlimit(limit, (value, value))
        except (ValueError, OSError):
            pass


def main() -> int:
    request = json.loads(sys.stdin.read())
    _limit_resources(request.get("memory_bytes"))
    result_fd = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    result = check(request)
    data = (json.dumps(result) + "\n").encode()
    while data:
        data = data[os.write(result_fd, data):]
    return 0


if __name__ == "__main__":
    # _exit: no interpreter teardown, so a mechanism's __del__ cannot run after the verdict.
    os._exit(main())
