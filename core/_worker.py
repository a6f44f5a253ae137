"""Worker-process side of the sandboxed host for generated code (see :mod:`core.host`).

Started by the controller as ``python -I -B -c <bootstrap> PROJECT_ROOT`` (inside ``unshare`` where
available), from an empty temporary folder, with an environment built from scratch. It speaks one
JSON object per line: commands on its stdin, replies on its stdout. Before any generated code runs
it keeps private copies of both pipes, points descriptors 0 and 1 at ``/dev/null`` (the generated
code's ``print`` goes nowhere and cannot interleave with replies), imports every project module the
kind needs and then locks itself in (:func:`core.sandbox.apply`): from then on it cannot import
from, read or write the project tree.

0. Right after the sandbox is applied, before any generated code runs, the worker sends
   ``{"op": "sandbox", "layers": ..., "env_keys": ...}``: the state of each layer, which generated
   code therefore cannot forge.
1. ``{"op": "load", ...}``: compile the source as module ``bilevel_generated`` (the same name in
   every worker, so code cannot tell a check from the live load), find the one public subclass of
   the kind's base class, instantiate a *probe* instance and exercise it (the mechanism hooks on
   probe records, or the kind's ``check`` function), then instantiate the live instance.
2. ``{"op": "call", "method": ..., ...}``: the kind's ``serve`` function turns the JSON arguments
   into fresh objects, calls the method and returns plain JSON. An exception comes back as its type
   name and a capped message; the controller decides what it means.

A reply is ``{"ok": true, "value": ...}`` or ``{"ok": false, "error_type", "message", "traceback"}``.
During a call the worker may send ``{"op": "callback", "name", "arg"}`` (an article stage asking the
inner model) and read one reply. Deadlines are not the worker's business: the controller kills it.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

MODULE_NAME = "bilevel_generated"
_dumps = json.dumps  # bound before generated code runs (it may still corrupt its own replies: they are refused)
TAIL_CHARS = 2000
MESSAGE_CHARS = 500


class Channel:
    def __init__(self, read_fd: int, write_fd: int) -> None:
        self.reader = os.fdopen(read_fd, "rb", buffering=0)
        self.buffer = b""
        self.write_fd = write_fd

    def send(self, message: dict[str, Any]) -> None:
        data = (_dumps(message, allow_nan=False) + "\n").encode()
        while data:
            data = data[os.write(self.write_fd, data):]

    def receive(self) -> dict[str, Any] | None:
        while b"\n" not in self.buffer:
            chunk = self.reader.read(1 << 16)
            if not chunk:
                return None
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return json.loads(line)


def _error(exc: BaseException, *, tb: bool = True) -> dict[str, Any]:
    try:
        message = " ".join(str(exc).split())[:MESSAGE_CHARS]
    except BaseException:  # noqa: BLE001 - a message that cannot be formatted is still an error
        message = "(unprintable message)"
    return {"ok": False, "error_type": type(exc).__name__[:100], "message": message,
            "traceback": traceback.format_exc()[-TAIL_CHARS:] if tb else ""}


def _import(dotted: str) -> Any:
    module_path, _, attr = dotted.rpartition(".")
    return getattr(importlib.import_module(module_path), attr)


def _load(request: dict[str, Any], kind: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    from core._contract_check import ContractFailure, declared_name, find_mechanism_class, hooks_overridden

    base = _import(kind["base"])
    stage = "import"
    try:
        code = compile(request["source"], request["filename"], "exec")
        spec = importlib.util.spec_from_loader(MODULE_NAME, loader=None, origin=request["filename"])
        module = importlib.util.module_from_spec(spec)  # the source came over the pipe: the run dir is unreadable
        module.__file__ = request["filename"]
        sys.modules[MODULE_NAME] = module
        exec(code, module.__dict__)  # noqa: S102 - this is the sandboxed worker's whole purpose
        stage = "check-failed"
        cls = find_mechanism_class(module, base)
        name = declared_name(cls, base)
        stage = "instantiate-failed"
        params = request.get("params") or {}
        probe = cls(**params)
        stage = "check-failed"
        if kind.get("check"):
            _import(kind["check"])(probe, request.get("context"))
        else:
            from core._contract_check import exercise_hooks
            exercise_hooks(probe, request.get("context"))
        stage = "live"
        instance = cls(**params)
    except ContractFailure as failure:
        return None, {"ok": False, "stage": "contract", "rule": failure.rule, "error_type": "ContractFailure",
                      "message": str(failure)[:MESSAGE_CHARS], "traceback": failure.tb[-TAIL_CHARS:]}
    except BaseException as exc:  # noqa: BLE001 - SystemExit at import is the code's failure too
        reply = _error(exc)
        reply["stage"] = "instantiate" if stage == "live" else "contract"
        reply["rule"] = {"import": "import-failed", "live": "instantiate-failed"}.get(stage, stage)
        return None, reply
    try:  # the knobs as the instance holds them, for the journal; only plain JSON travels
        params_out = json.loads(json.dumps(dict(getattr(instance, "params", None) or {}), allow_nan=False))
    except BaseException:  # noqa: BLE001
        params_out = {}
    return instance, {"ok": True, "name": name, "class_name": cls.__name__, "params": params_out,
                      "hooks": hooks_overridden(cls, base, tuple(kind.get("hooks") or ()))}


def serve_mechanism(instance: Any, message: dict[str, Any], callback: Callable[[str, Any], Any]) -> Any:
    """The Level-2 mechanism protocol over JSON. The worker keeps its own copy of the loop's history:
    each call brings only the records appended since the previous one."""
    from core.records import FilterVerdict, Guidance, Proposal, ProposalContext, TrialRecord

    history = _STATE.setdefault("history", [])
    if message.get("history_reset"):
        history.clear()
    history.extend(TrialRecord.model_validate(r) for r in message.get("history", ()))
    method, args = message["method"], message.get("args", [])

    def ctx(data: dict[str, Any]) -> ProposalContext:
        return ProposalContext.model_validate({**data, "history": tuple(history)})

    if method == "replay":
        out = instance.replay(tuple(history))
    elif method in ("guidance", "propose"):
        out = getattr(instance, method)(ctx(args[0]))
    elif method == "filter":
        out = instance.filter(Proposal.model_validate(args[0]), ctx(args[1]))
    elif method == "decide":
        out = instance.decide(TrialRecord.model_validate(args[0]), ctx(args[1]))
    elif method == "observe":
        instance.observe(TrialRecord.model_validate(args[0]))
        return None
    else:
        raise ValueError(f"unknown hook {method!r}")
    expected = {"replay": (), "guidance": (Guidance,), "propose": (Proposal,), "filter": (FilterVerdict,),
                "decide": (bool,)}[method]
    if out is None or method == "replay":
        return None
    if not isinstance(out, expected):
        raise TypeError(f"hook {method} returned {type(out).__name__}, expected {expected[0].__name__} or None")
    return out if isinstance(out, bool) else out.model_dump(mode="json")


_STATE: dict[str, Any] = {}


def main() -> int:
    channel = Channel(os.dup(0), os.dup(1))
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    request = channel.receive()
    if request is None:
        return 1
    kind = request["kind"]
    for dotted in filter(None, (kind["base"], kind.get("check"), kind["serve"])):
        _import(dotted)  # every project module the kind needs, before the door closes
    import core._contract_check  # noqa: F401
    from core import sandbox

    spec = sandbox.SandboxSpec(write_dir=os.getcwd(), limits=sandbox.Limits(**request["limits"]))
    layers = sandbox.apply(spec)
    # the layer report goes out before any generated code runs, so that code cannot forge it
    channel.send({"op": "sandbox", "layers": layers, "env_keys": sorted(os.environ)})
    serve = _import(kind["serve"])
    instance, reply = _load(request, kind)
    channel.send(reply)
    if instance is None:
        return 0

    def callback(name: str, arg: Any) -> Any:
        channel.send({"op": "callback", "name": name, "arg": arg})
        answer = channel.receive()
        if answer is None:
            raise EOFError("the controller closed the channel")
        if not answer.get("ok"):
            raise RuntimeError(str(answer.get("message", "callback failed"))[:MESSAGE_CHARS])
        return answer.get("value")

    while True:
        message = channel.receive()
        if message is None or message.get("op") == "close":
            return 0
        try:
            value = serve(instance, message, callback)
            _dumps(value, allow_nan=False)  # an unserialisable value is this call's error
            reply = {"ok": True, "value": value}
        except BaseException as exc:  # noqa: BLE001 - every escape goes back as an error
            reply = _error(exc)
        channel.send(reply)


if __name__ == "__main__":
    # _exit: no interpreter teardown, so generated __del__ / atexit code cannot run after the last reply
    os._exit(main())
