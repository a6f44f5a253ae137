"""Staged loading of generated source into a sandboxed worker attached to the running loop.

Level 2 writes Python source implementing :class:`core.mechanism.Mechanism` (or a domain's own
plug-in kind); :meth:`MechanismLoader.load` takes it through these stages and raises
:class:`~core.errors.MechanismError` (``stage`` set, ``traceback_tail`` where there was one) at the
first that fails, so the caller can journal the failure, feed it back to the designer and keep its
parent mechanism set:

1. ``write``       ``<run_dir>/mechanisms/<sha256[:16]>.py``, atomically (temp file + ``os.replace``);
                   an identical file already there is reused.
2. ``parse``       ``ast.parse`` + compile; the message carries the line number.
3. ``policy``      the AST policy of :mod:`core.policy`: a fast lint whose message tells the designer
                   early what will not work. It is **not** the security boundary.
4. ``import`` / ``contract`` / ``instantiate``: a new worker process (:mod:`core.host`) inside the
                   OS sandbox of :mod:`core.sandbox` compiles the source, instantiates a probe
                   instance and exercises it (every hook once, or the kind's check function), then
                   instantiates the live instance — all under one deadline, with the worker killed on
                   overrun. The check and the live load are the same process and the same module name.

The controller never imports generated code: :attr:`LoadedMechanism.instance` is a proxy whose
methods are JSON calls to the worker, with deadlines enforced from outside and every reply rebuilt
as fresh, validated records. Unloading (a revert) kills the worker.

Library mechanisms (trusted code shipped in the package) run in-process: :func:`load_library_mechanism`.

A domain's own plug-in kind: pass a :class:`LoadContract` naming its base class, the project
modules generated code may import, a check function, the worker-side ``serve`` function and the
controller-side proxy factory (e.g. article_opt's pipeline stages). The default is the Level-2
mechanism protocol.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core import sandbox
from core.errors import ConfigError, MechanismError
from core.host import RemoteMechanism, Worker, WorkerKind
from core.mechanism import HOOKS, Mechanism
from core.policy import DEFAULT_ALLOWED, MECHANISM_PATH, PROJECT_ALLOWED, STDLIB_ALLOWED, check_policy
from core.records import ProposalContext

__all__ = [
    "DEFAULT_ALLOWED",
    "MECHANISM_CONTRACT",
    "LoadContract",
    "LoadedMechanism",
    "MechanismLoader",
    "check_policy",
    "load_library_mechanism",
    "mechanism_proxy",
]

logger = logging.getLogger(__name__)

MECHANISM_DIR = "mechanisms"
TAIL_CHARS = 2000
DEFAULT_MEMORY_BYTES = 2 * 1024**3


def mechanism_proxy(worker: Worker, info: dict[str, Any]) -> RemoteMechanism:
    proxy = RemoteMechanism(worker, name=str(info["name"])[:100], hooks=tuple(info.get("hooks", ())))
    params = info.get("params")
    proxy.params = params if isinstance(params, dict) and len(json.dumps(params)) <= 10_000 else {}
    return proxy


@dataclass(frozen=True)
class LoadContract:
    """What generated source must implement.

    ``base``: dotted path of the class the source subclasses exactly once. ``project_modules``: the
    project modules it may import (besides the standard-library allow-list). ``check``: dotted
    path of ``check(instance, context) -> Any`` that the worker calls on a probe instance, raising on
    a broken contract; ``None`` exercises the mechanism hooks. ``hooks``: the methods reported as
    overridden. ``serve``: dotted worker-side ``serve(instance, message, callback)``; ``proxy``:
    dotted controller-side ``proxy(worker, info)`` building the object the caller gets.
    """

    base: str = MECHANISM_PATH
    project_modules: frozenset[str] = PROJECT_ALLOWED
    check: str | None = None
    hooks: tuple[str, ...] = HOOKS
    serve: str = "core._worker.serve_mechanism"
    proxy: str = "core.loader.mechanism_proxy"

    @property
    def is_mechanism(self) -> bool:
        return self.base == MECHANISM_PATH and self.check is None

    def kind(self) -> WorkerKind:
        return WorkerKind(base=self.base, check=self.check, serve=self.serve, hooks=self.hooks)

    def make_proxy(self, worker: Worker, info: dict[str, Any]) -> Any:
        module_path, _, attr = self.proxy.rpartition(".")
        return getattr(importlib.import_module(module_path), attr)(worker, info)


MECHANISM_CONTRACT = LoadContract()


@dataclass(frozen=True)
class LoadedMechanism:
    """Generated source that passed every stage, running in its own sandboxed worker."""

    name: str
    class_name: str
    digest: str  # full sha256 of the source
    path: str  # relative to the run directory, e.g. "mechanisms/0123abcd4567ef89.py"
    instance: Any  # the proxy (a RemoteMechanism for the default contract)
    hooks_overridden: tuple[str, ...]
    load_seconds: float
    worker_pid: int | None
    sandbox: dict[str, str]  # each layer's state in the worker, e.g. {"landlock": "on (ABI 7: ...)"}


class MechanismLoader:
    """Loads generated source for one run directory, one sandboxed worker per load. Thread-safe."""

    def __init__(
        self,
        run_dir: Path,
        *,
        allowed_imports: frozenset[str] | None = None,
        check_timeout_s: float = 10.0,
        check_memory_bytes: int | None = DEFAULT_MEMORY_BYTES,
        contract: LoadContract = MECHANISM_CONTRACT,
        limits: sandbox.Limits | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.contract = contract
        if allowed_imports is None:
            allowed_imports = DEFAULT_ALLOWED if contract.is_mechanism else STDLIB_ALLOWED | contract.project_modules
        self.allowed_imports = frozenset(allowed_imports)
        self.check_timeout_s = check_timeout_s
        self.limits = limits or sandbox.Limits(memory_bytes=check_memory_bytes or sandbox.Limits().memory_bytes)

    def load(
        self,
        source: str,
        *,
        params: dict[str, Any] | None = None,
        context: ProposalContext | dict[str, Any] | None = None,
    ) -> LoadedMechanism:
        """Run every stage; ``context`` (optional) is the probe the contract check calls the hooks
        with — pass the loop's current context to check against real data (a plain dict for a
        custom contract's check function)."""
        started = time.perf_counter()
        contract = self.contract
        path, digest = self._write(source)
        check_policy(source, allowed_imports=self.allowed_imports, base=contract.base,
                     project_modules=contract.project_modules)  # parse + policy stages: a lint
        relative = path.relative_to(self.run_dir).as_posix()
        probe = context.model_dump(mode="json") if isinstance(context, ProposalContext) else context
        worker = Worker(kind=contract.kind(), limits=self.limits)
        info = worker.load(source, filename=relative, params=params, context=probe, timeout_s=self.check_timeout_s)
        layers = {"environment": "on (built from scratch, python -I, empty temporary cwd)",
                  "namespaces": "on (user, net, ipc, pid, mount)" if sandbox.namespaces_available() else "unavailable",
                  **{str(k): str(v) for k, v in dict(info.get("sandbox") or {}).items()}}
        try:
            instance = contract.make_proxy(worker, info)
        except BaseException:
            worker.close()
            raise
        loaded = LoadedMechanism(
            name=str(info["name"])[:100], class_name=str(info["class_name"])[:100], digest=digest, path=relative,
            instance=instance, hooks_overridden=tuple(str(h) for h in info.get("hooks", ()) if h in contract.hooks),
            load_seconds=time.perf_counter() - started, worker_pid=worker.pid, sandbox=layers,
        )
        logger.info("loaded %s (%s) from %s into worker %s in %.2fs", loaded.name, loaded.class_name, relative,
                    worker.pid, loaded.load_seconds)
        return loaded

    def unload(self, loaded: LoadedMechanism) -> None:
        """Revert: kill the worker. Nothing of the generated code keeps running."""
        close = getattr(loaded.instance, "close", None)
        if close is not None:
            close()
            logger.info("unloaded %s (worker %s killed)", loaded.name, loaded.worker_pid)

    def _write(self, source: str) -> tuple[Path, str]:
        data = source.encode("utf-8")
        digest = hashlib.sha256(data).hexdigest()
        directory = self.run_dir / MECHANISM_DIR
        path = directory / f"{digest[:16]}.py"
        try:
            directory.mkdir(parents=True, exist_ok=True)
            if path.is_file() and path.read_bytes() == data:
                return path, digest
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{digest[:16]}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise MechanismError(f"write: cannot write {path}: {exc}", stage="write",
                                 traceback_tail=_tail()) from exc
        return path, digest


# -- library mechanisms ---------------------------------------------------------------------------


def load_library_mechanism(spec: str, params: dict[str, Any] | None = None) -> Mechanism:
    """Instantiate a trusted mechanism shipped with the package, e.g.
    ``"core.mechanisms.tabu:TabuMechanism"``. No policy, no subprocess."""
    module_path, sep, attr = spec.partition(":")
    if not sep or not module_path or not attr:
        raise ConfigError(f"mechanism spec {spec!r} must look like 'package.module:ClassName'")
    try:
        module = importlib.import_module(module_path)
    except ModuleNotFoundError as exc:
        if exc.name and (module_path == exc.name or module_path.startswith(exc.name + ".")):
            raise ConfigError(f"mechanism spec {spec!r}: no module named {exc.name!r}") from exc
        raise MechanismError(f"import: {spec}: {_one_line(exc)}", stage="import",
                             traceback_tail=_tail()) from exc
    except Exception as exc:
        raise MechanismError(f"import: {spec}: {_one_line(exc)}", stage="import",
                             traceback_tail=_tail()) from exc
    cls = getattr(module, attr, None)
    if cls is None:
        raise ConfigError(f"mechanism spec {spec!r}: module {module_path} has no attribute {attr!r}")
    if not (isinstance(cls, type) and issubclass(cls, Mechanism)):
        raise ConfigError(f"mechanism spec {spec!r} names {cls!r}, which is not a Mechanism subclass")
    try:
        return cls(**(params or {}))
    except Exception as exc:
        raise MechanismError(f"instantiate: {spec}: {_one_line(exc)}", stage="instantiate",
                             traceback_tail=_tail()) from exc


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:300]


def _tail() -> str:
    return traceback.format_exc()[-TAIL_CHARS:]
