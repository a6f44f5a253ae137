"""The controller side of the sandboxed host: generated code runs in a worker, never in this process.

A :class:`Worker` is one long-lived child process (:mod:`core._worker`) holding one generated
object, started inside the OS sandbox of :mod:`core.sandbox`. A call is one JSON line out and one
JSON line back. The deadline is enforced here, from outside: a worker that has not answered in time
is killed with its whole process group and :class:`~core.errors.HookTimeout` is raised; so is a
reply over :data:`MAX_REPLY_BYTES`. Revert = :meth:`Worker.close` = kill.

What comes back is only ever plain JSON, and the proxies rebuild it as fresh, strictly validated
records (:func:`rebuild_proposal` and friends): sizes are capped, values are JSON scalars or short
lists of them, and every bookkeeping field (``origin``) is set by the controller. So nothing a
worker returns can run code in the controller when it is formatted, compared or journaled.

:class:`RemoteMechanism` is a :class:`~core.mechanism.Mechanism` whose hooks are such calls; the
controller attaches it like any other mechanism. A domain's own plug-in kind (article_opt's stages)
provides its proxy in the same way (:class:`WorkerKind`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import select
import signal
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import core
from core import homes, sandbox
from core.errors import HookTimeout, MechanismError
from core.mechanism import HOOKS, Mechanism
from core.records import Constraints, FilterVerdict, Guidance, Proposal, ProposalContext, TrialRecord

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(core.__file__).resolve().parent.parent
MAX_REPLY_BYTES = 1 << 20
MAX_CALLBACKS = 16
TAIL_CHARS = 2000
BOOTSTRAP = "import sys, os; sys.path.insert(0, sys.argv[1]); import core._worker as w; os._exit(w.main())"


class WorkerDied(MechanismError):
    """The worker exited (killed by a limit, or crashed) instead of answering."""


class RemoteError(Exception):
    """A hook raised inside the worker: its type name and a capped message, nothing else."""


class InvalidReply(ValueError):
    """A worker answered something that is not a valid value for the hook."""


@dataclass(frozen=True)
class WorkerKind:
    """A kind of generated object. ``base``: dotted path of the class the source subclasses once;
    ``check``: dotted ``check(instance, context)`` run on a probe instance (``None``: the mechanism
    hooks are exercised); ``serve``: dotted ``serve(instance, message, callback)`` in the worker;
    ``hooks``: the methods reported as overridden."""

    base: str = "core.mechanism.Mechanism"
    check: str | None = None
    serve: str = "core._worker.serve_mechanism"
    hooks: tuple[str, ...] = HOOKS

    def request(self) -> dict[str, Any]:
        return {"base": self.base, "check": self.check, "serve": self.serve, "hooks": list(self.hooks)}


MECHANISM_KIND = WorkerKind()


# Every worker this process started and has not closed: closed at exit (a normal exit, and a
# multiprocessing child's, which skips atexit), so neither its process nor its folder outlives the
# program that forgot it. A forked child inherits the parent's entries and must never close those.
_LIVE: dict[int, weakref.ref[Worker]] = {}
_EXIT_HOOKED: set[int] = set()


def _close_live() -> None:
    for ref in list(_LIVE.values()):
        worker = ref()
        if worker is not None and worker._owner == os.getpid():
            worker.close()


def _hook_exit() -> None:
    pid = os.getpid()
    if pid in _EXIT_HOOKED:
        return
    _EXIT_HOOKED.add(pid)
    homes.sweep_stale()  # once per process: what earlier, killed controllers could not clean up
    import atexit
    from multiprocessing import util

    atexit.register(_close_live)
    util.Finalize(None, _close_live, exitpriority=100)


@dataclass
class Worker:
    """One sandboxed worker process holding one loaded object."""

    kind: WorkerKind = MECHANISM_KIND
    limits: sandbox.Limits = field(default_factory=sandbox.Limits)
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._proc: subprocess.Popen | None = None
        self._home: str | None = None
        self._log: Any = None
        self.layers: dict[str, str] = {}
        self.env_keys: tuple[str, ...] = ()
        self._buffer = b""
        self._lock = threading.RLock()
        self.calls = 0
        self._owner = os.getpid()

    # -- life ----------------------------------------------------------------------------------------
    def load(self, source: str, *, filename: str, params: Mapping[str, Any] | None, context: Any,
             timeout_s: float) -> dict[str, Any]:
        """Start the worker and load ``source``; raises :class:`MechanismError` (stage ``contract``,
        ``import`` or ``instantiate``) on failure, with the worker killed."""
        try:
            request = json.dumps({"source": source, "filename": filename, "params": dict(params or {}),
                                  "context": context, "kind": self.kind.request(),
                                  "limits": vars(self.limits)}, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise MechanismError(f"contract: params or context are not JSON-serialisable: {exc}",
                                 stage="contract", rule="params-not-json") from exc
        # <home>/work is the worker's cwd and its only writable folder; its stderr log lives beside it,
        # where the worker cannot replace it, and is read back through the descriptor opened here
        # (never by path: a path inside a folder the worker writes could be swapped for a link or a FIFO)
        self._owner = os.getpid()
        _hook_exit()
        self._home = tempfile.mkdtemp(prefix=homes.PREFIX)
        _LIVE[id(self)] = weakref.ref(self)
        work = Path(self._home) / "work"
        work.mkdir(mode=0o700)
        self._log = open(Path(self._home) / "worker.log", "w+b")  # noqa: SIM115 - kept until close()
        self._proc = subprocess.Popen(
            sandbox.worker_command(["-c", BOOTSTRAP, str(PROJECT_ROOT)]),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, cwd=work,
            env=sandbox.worker_environment(str(work)), start_new_session=True, close_fds=True,
        )
        os.set_blocking(self._proc.stdin.fileno(), False)
        homes.write_owner(self._home, self._owner, self._proc.pid)  # a later controller removes it if both die
        deadline = time.monotonic() + timeout_s
        try:
            self._send(request.encode() + b"\n", deadline)
            layers = self._receive(deadline, what="load")
            if layers.get("op") != "sandbox":
                raise InvalidReply("the worker did not report its sandbox before loading")
            self.layers = _short_strings(layers.get("layers"), "sandbox layers")
            self.env_keys = _strings(layers.get("env_keys"), "env_keys", limit=200)
            reply = self._receive(deadline, what="load")
        except HookTimeout:
            raise MechanismError(
                f"contract: timeout: loading did not finish within {timeout_s:g} s (the worker was killed); "
                "remove unbounded loops or heavy work from import time, __init__ and the hooks",
                stage="contract", rule="timeout") from None
        except WorkerDied as exc:
            raise MechanismError(f"contract: child-crashed: {exc}", stage="contract", rule="child-crashed",
                                 traceback_tail=exc.traceback_tail) from None
        except InvalidReply as exc:
            raise MechanismError(f"contract: bad-reply: {exc}", stage="contract", rule="bad-reply") from None
        except BaseException:
            self.close()
            raise
        try:
            info = rebuild_load_reply(reply, self.kind)
        except InvalidReply as exc:
            self.close()
            raise MechanismError(f"contract: bad-reply: {exc}", stage="contract", rule="bad-reply") from None
        if not info["ok"]:
            self.close()
            raise MechanismError(f"{info['stage']}: {info['rule']}: {info['error_type']}: {info['message']}",
                                 stage=info["stage"], rule=info["rule"], traceback_tail=info["traceback"])
        info["sandbox"], info["env_keys"] = self.layers, list(self.env_keys)
        self.info = info
        return info

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def close(self) -> None:
        """Kill the worker's whole process group and remove its folder; idempotent. A no-op in a
        forked child: the worker and its folder belong to the process that started them."""
        if self._owner != os.getpid():
            return
        _LIVE.pop(id(self), None)
        with self._lock:
            proc, self._proc = self._proc, None
            if proc is not None:
                _kill(proc)
            if self._log is not None:
                self._log.close()
                self._log = None
            if self._home:
                homes.remove(self._home)
                self._home = None

    def __del__(self) -> None:  # a forgotten worker must not outlive its proxy
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter teardown
            pass

    # -- calls ---------------------------------------------------------------------------------------
    def call(self, message: dict[str, Any], *, timeout_s: float,
             callbacks: Mapping[str, Callable[[Any], Any]] | None = None) -> Any:
        """Send one call and return the JSON value of its reply. Raises :class:`HookTimeout` (the
        worker is killed), :class:`WorkerDied` or :class:`RemoteError` (the hook raised)."""
        with self._lock:
            if self._proc is None:
                raise WorkerDied("the worker is closed (reverted or killed earlier)", stage="call")
            self.calls += 1
            deadline = time.monotonic() + timeout_s
            try:
                self._send(json.dumps({"op": "call", **message}, allow_nan=False).encode() + b"\n", deadline)
                for _ in range(MAX_CALLBACKS + 1):
                    reply = self._receive(deadline, what=str(message.get("method")))
                    if reply.get("op") != "callback":
                        break
                    paused = time.monotonic()
                    answer = self._answer(reply, callbacks or {})
                    deadline += time.monotonic() - paused  # the controller's own work is not the hook's time
                    self._send(json.dumps(answer, allow_nan=False).encode() + b"\n", deadline)
                else:
                    raise InvalidReply(f"more than {MAX_CALLBACKS} callbacks in one call")
            except BaseException:
                self.close()  # a call that did not end cleanly leaves the protocol in an unknown state
                raise
        if not isinstance(reply, dict) or not isinstance(reply.get("ok"), bool):
            self.close()
            raise InvalidReply("the worker's reply is not a protocol message")
        if not reply["ok"]:
            raise RemoteError(f"{_text(reply.get('error_type'), 100)}: {_text(reply.get('message'), 500)}")
        return reply.get("value")

    def _answer(self, request: dict[str, Any], callbacks: Mapping[str, Callable[[Any], Any]]) -> dict[str, Any]:
        handler = callbacks.get(str(request.get("name")))
        if handler is None:
            return {"ok": False, "message": f"no callback named {str(request.get('name'))[:50]!r}"}
        try:
            return {"ok": True, "value": handler(request.get("arg"))}
        except Exception as exc:  # the callback's failure is the hook's problem, reported to it
            return {"ok": False, "message": f"{type(exc).__name__}: {exc}"[:500]}

    def _send(self, data: bytes, deadline: float) -> None:
        fd = self._proc.stdin.fileno()
        view = memoryview(data)
        while view:
            left = deadline - time.monotonic()
            if left <= 0:
                self._timeout()
            _, ready, _ = select.select([], [fd], [], left)
            if not ready:
                continue
            try:
                view = view[os.write(fd, view):]
            except BlockingIOError:
                continue
            except BrokenPipeError:
                raise self._died() from None

    def _receive(self, deadline: float, *, what: str) -> dict[str, Any]:
        fd = self._proc.stdout.fileno()
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                self._timeout(what)
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise self._died()
            self._buffer += chunk
            if len(self._buffer) > MAX_REPLY_BYTES:
                self.close()
                raise InvalidReply(f"the worker's reply to {what} is over {MAX_REPLY_BYTES} bytes")
        line, _, self._buffer = self._buffer.partition(b"\n")
        try:
            reply = json.loads(line)
        except (ValueError, RecursionError) as exc:  # deep nesting is refused like any bad JSON
            self.close()
            raise InvalidReply(f"the worker's reply to {what} is not JSON") from exc
        if not isinstance(reply, dict):
            self.close()
            raise InvalidReply(f"the worker's reply to {what} is not a JSON object")
        return reply

    def _timeout(self, what: str = "call") -> None:
        self.close()
        raise HookTimeout(f"{what} ran past its deadline; the worker was killed")

    def _died(self) -> WorkerDied:
        proc = self._proc
        status = proc.wait(timeout=5) if proc is not None else None
        tail = self.log_tail()
        self.close()
        how = f"killed by signal {-status}" if status is not None and status < 0 else f"exit status {status}"
        return WorkerDied(f"the worker ended without answering ({how})", stage="call", traceback_tail=tail)

    def log_tail(self) -> str:
        """The last :data:`TAIL_CHARS` bytes of the worker's stderr, read through the descriptor the
        controller opened (a regular file outside the worker's reach), never by path."""
        if self._log is None:
            return ""
        try:
            size = os.fstat(self._log.fileno()).st_size
            return os.pread(self._log.fileno(), TAIL_CHARS, max(0, size - TAIL_CHARS)).decode(errors="replace")
        except OSError:
            return ""


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for pipe in (proc.stdin, proc.stdout):
        try:
            if pipe:
                pipe.close()
        except OSError:
            pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        log.error("worker %d did not die after SIGKILL", proc.pid)
    # the sandboxed interpreter is a grandchild (under unshare): wait until it has really exited
    deadline = time.monotonic() + 5
    while _group_running(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.005)


def _group_running(pgid: int) -> bool:
    """True while a process of group ``pgid`` is alive and not a zombie (Linux ``/proc``; else False)."""
    try:
        entries = os.listdir("/proc")
    except OSError:
        return False
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            return True
    return False


# -- rebuilding what comes back ----------------------------------------------------------------------

MAX_CHANGES = 64
MAX_LIST = 64
MAX_STR = 1000


def _text(value: Any, limit: int) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidReply(f"expected a string, got {type(value).__name__}")
    return value[:limit]


def _scalar(value: Any, where: str) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if abs(value) > 2**63:
            raise InvalidReply(f"{where}: integer out of range")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidReply(f"{where}: not a finite number")
        return value
    if isinstance(value, str):
        if len(value) > MAX_STR:
            raise InvalidReply(f"{where}: string longer than {MAX_STR} characters")
        return value
    raise InvalidReply(f"{where}: {type(value).__name__} is not a JSON scalar")


def _strings(value: Any, where: str, limit: int = 200) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > limit:
        raise InvalidReply(f"{where}: expected a list of at most {limit} strings")
    return tuple(_text(v, 200) for v in value)


def _fields(value: Any, allowed: set[str], what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidReply(f"{what}: expected an object, got {type(value).__name__}")
    unknown = set(value) - allowed
    if unknown:
        raise InvalidReply(f"{what}: unknown fields {sorted(unknown)[:5]}")
    return value


def _short_strings(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, dict) or len(value) > 20:
        raise InvalidReply(f"{where}: expected an object of at most 20 entries")
    return {_text(k, 50): _text(v, 200) for k, v in value.items()}


NAME_CHARS = 100


def rebuild_load_reply(value: Any, kind: WorkerKind) -> dict[str, Any]:
    """The worker's answer to a load, rebuilt field by field: a failure's stage, rule and capped
    message, or a success's name, class name, hooks (a subset of the kind's) and JSON params."""
    data = _fields(value, {"ok", "name", "class_name", "hooks", "params", "stage", "rule", "error_type",
                           "message", "traceback"}, "load reply")
    if not isinstance(data.get("ok"), bool):
        raise InvalidReply("load reply: 'ok' must be true or false")
    if not data["ok"]:
        stage = data.get("stage")
        return {"ok": False, "stage": stage if stage in ("contract", "instantiate") else "contract",
                "rule": _text(data.get("rule"), 120) or "unknown", "error_type": _text(data.get("error_type"), 100),
                "message": _text(data.get("message"), 500), "traceback": _text(data.get("traceback"), TAIL_CHARS)}
    name, class_name = _text(data.get("name"), NAME_CHARS), _text(data.get("class_name"), NAME_CHARS)
    for label, text in (("name", name), ("class_name", class_name)):
        if not text or not text.isprintable():
            raise InvalidReply(f"load reply: {label} must be a non-empty printable string")
    hooks = _strings(data.get("hooks"), "hooks", limit=len(kind.hooks))
    if not set(hooks) <= set(kind.hooks):
        raise InvalidReply(f"load reply: hooks must be among {list(kind.hooks)}")
    params = data.get("params") or {}
    if not isinstance(params, dict) or len(json.dumps(params)) > 10_000:
        raise InvalidReply("load reply: params must be a JSON object under 10,000 characters")
    return {"ok": True, "name": name, "class_name": class_name, "hooks": list(hooks), "params": params}


def rebuild_proposal(value: Any, *, origin: str) -> Proposal:
    """A fresh :class:`Proposal` from a worker's JSON; ``origin`` is the controller's, not the worker's."""
    data = _fields(value, {"changes", "hypothesis", "region", "origin", "payload"}, "proposal")
    changes = data.get("changes") or {}
    if not isinstance(changes, dict) or len(changes) > MAX_CHANGES:
        raise InvalidReply(f"proposal.changes: expected an object of at most {MAX_CHANGES} entries")
    clean: dict[str, Any] = {}
    for key, item in changes.items():
        if len(key) > 100:
            raise InvalidReply("proposal.changes: a key is longer than 100 characters")
        if isinstance(item, list):
            if len(item) > MAX_LIST:
                raise InvalidReply(f"proposal.changes[{key[:40]!r}]: list longer than {MAX_LIST}")
            clean[key] = [_scalar(v, f"proposal.changes[{key[:40]!r}]") for v in item]
        else:
            clean[key] = _scalar(item, f"proposal.changes[{key[:40]!r}]")
    payload = data.get("payload")
    return Proposal(changes=clean, hypothesis=_text(data.get("hypothesis"), 2000),
                    region=_text(data.get("region"), 200), origin=origin,
                    payload=None if payload is None else _text(payload, 100_000))


def rebuild_guidance(value: Any) -> Guidance:
    data = _fields(value, {"text", "constraints"}, "guidance")
    raw = _fields(data.get("constraints") or {}, {"avoid_regions", "prefer_params", "avoid_params", "step_scale"},
                  "guidance.constraints")
    scale = raw.get("step_scale")
    if scale is not None:
        scale = _scalar(scale, "guidance.constraints.step_scale")
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale <= 100:
            raise InvalidReply("guidance.constraints.step_scale: expected a number in (0, 100]")
        scale = float(scale)
    constraints = Constraints(avoid_regions=_strings(raw.get("avoid_regions"), "avoid_regions"),
                              prefer_params=_strings(raw.get("prefer_params"), "prefer_params"),
                              avoid_params=_strings(raw.get("avoid_params"), "avoid_params"), step_scale=scale)
    return Guidance(text=_text(data.get("text"), 4000), constraints=constraints)


def rebuild_verdict(value: Any, *, origin: str) -> FilterVerdict:
    data = _fields(value, {"action", "reason", "proposal"}, "filter verdict")
    action = data.get("action", "accept")
    if action not in ("accept", "reject", "rewrite"):
        raise InvalidReply(f"filter verdict: unknown action {str(action)[:40]!r}")
    proposal = data.get("proposal")
    rebuilt = rebuild_proposal(proposal, origin=origin) if proposal is not None else None
    if action == "rewrite" and rebuilt is None:
        raise InvalidReply("filter verdict: a rewrite without a proposal")
    return FilterVerdict(action=action, reason=_text(data.get("reason"), 1000), proposal=rebuilt)


# -- the mechanism proxy -------------------------------------------------------------------------------


class RemoteMechanism(Mechanism):
    """A generated mechanism living in a sandboxed :class:`Worker`; each hook is one call.

    ``timeout_s`` is set by the controller that attaches it (its hook deadline). The worker keeps
    its own copy of the history; each call sends only the records it has not seen.
    """

    def __init__(self, worker: Worker, *, name: str, hooks: tuple[str, ...], timeout_s: float = 5.0) -> None:
        super().__init__()
        self.worker = worker
        self.name = name  # type: ignore[misc] - per-instance: the class is shared by every generated one
        self.hooks = tuple(h for h in hooks if h in HOOKS)
        self.timeout_s = timeout_s
        self._sent = 0

    def __repr__(self) -> str:
        return f"RemoteMechanism({self.name!r}, pid={self.worker.pid})"

    def close(self) -> None:
        self.worker.close()

    def _call(self, method: str, args: list[Any], history: tuple[TrialRecord, ...] | None) -> Any:
        message: dict[str, Any] = {"method": method, "args": args}
        if history is not None:
            if len(history) < self._sent:  # a different (shorter) history: start the worker's copy again
                message["history_reset"] = True
                self._sent = 0
            message["history"] = [r.model_dump(mode="json") for r in history[self._sent:]]
        value = self.worker.call(message, timeout_s=self.timeout_s)
        if history is not None:
            self._sent = len(history)
        return value

    @staticmethod
    def _ctx(ctx: ProposalContext) -> dict[str, Any]:
        return ctx.model_dump(mode="json", exclude={"history"})

    def replay(self, history: tuple[TrialRecord, ...]) -> None:
        self._sent = 0
        self._call("replay", [], history)
        # a replay sends the whole history once: it has the load's budget, not one hook's
        return None

    def guidance(self, ctx: ProposalContext) -> Guidance | None:
        value = self._call("guidance", [self._ctx(ctx)], ctx.history)
        return None if value is None else rebuild_guidance(value)

    def propose(self, ctx: ProposalContext) -> Proposal | None:
        value = self._call("propose", [self._ctx(ctx)], ctx.history)
        return None if value is None else rebuild_proposal(value, origin="proposer")

    def filter(self, proposal: Proposal, ctx: ProposalContext) -> FilterVerdict | None:
        value = self._call("filter", [proposal.model_dump(mode="json"), self._ctx(ctx)], ctx.history)
        return None if value is None else rebuild_verdict(value, origin=proposal.origin)

    def decide(self, record: TrialRecord, ctx: ProposalContext) -> bool | None:
        value = self._call("decide", [record.model_dump(mode="json"), self._ctx(ctx)], ctx.history)
        if value is not None and not isinstance(value, bool):
            raise InvalidReply(f"decide: expected true, false or null, got {type(value).__name__}")
        return value

    def observe(self, record: TrialRecord) -> None:
        # the record being observed is not in the history yet: send it as the argument only
        self._call("observe", [record.model_dump(mode="json")], None)
        return None
