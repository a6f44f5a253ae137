"""Staged hot-loading of generated mechanism source into the running loop.

Level 2 writes Python source implementing :class:`core.mechanism.Mechanism`;
:meth:`MechanismLoader.load` takes it through six stages and raises
:class:`~core.errors.MechanismError` (``stage`` set, ``traceback_tail`` where there was one) at the
first that fails, so the caller can journal the failure and keep its parent mechanism set:

1. ``write``       ``<run_dir>/mechanisms/<sha256[:16]>.py``, atomically (temp file + ``os.replace``);
                   an identical file already there is reused.
2. ``parse``       ``ast.parse`` + compile; the message carries the line number.
3. ``policy``      the AST policy of :mod:`core.policy` (:class:`~core.errors.PolicyViolation`).
4. ``contract``    a child process (``python -s -B -m core._contract_check``) in its own process
                   group, with an environment built from scratch (no API keys), a capped address
                   space and a timeout (the group is killed on overrun). It imports the file, finds
                   the one Mechanism subclass, instantiates it and calls every hook once, checking
                   return types.
5. ``import``      ``importlib`` under a fresh module name ``bilevel_mech_<hash>_<n>``; ``sys.path``
                   is never touched and no name is reused.
6. ``instantiate`` ``cls(**params)`` in this process.

The contract check proves the module's top level terminates within the timeout *once*; the
in-process import (stage 5) runs the same code again without a deadline, so top-level code that
terminates only sometimes can still stall it. Hooks run later under the controller's deadlines.

Library mechanisms (trusted code shipped in the package) skip all this:
:func:`load_library_mechanism`.

The same stages load a domain's own plug-in type: pass a :class:`LoadContract` naming its base
class, the project modules generated code may import, and a check function the child process
calls on the instance (e.g. article_opt's pipeline stages). The default contract is the Level-2
mechanism protocol.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import itertools
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import core
from core._contract_check import ContractFailure, declared_name, find_mechanism_class
from core._contract_check import hooks_overridden as overridden_hooks
from core.errors import ConfigError, MechanismError
from core.mechanism import HOOKS, Mechanism
from core.policy import DEFAULT_ALLOWED, MECHANISM_PATH, PROJECT_ALLOWED, STDLIB_ALLOWED, check_policy
from core.records import ProposalContext

__all__ = [
    "DEFAULT_ALLOWED",
    "MECHANISM_CONTRACT",
    "ContractReport",
    "LoadContract",
    "LoadedMechanism",
    "MechanismLoader",
    "check_policy",
    "child_environment",
    "load_library_mechanism",
    "run_contract_check",
]

logger = logging.getLogger(__name__)

PROJECT_ROOT = Path(core.__file__).resolve().parent.parent
MECHANISM_DIR = "mechanisms"
TAIL_CHARS = 2000
DEFAULT_MEMORY_BYTES = 2 * 1024**3
CHILD_ENV_KEYS = ("PATH", "HOME", "LANG", "PYTHONHASHSEED", "PYTHONPATH")

_module_counter = itertools.count(1)
_counter_lock = threading.Lock()


@dataclass(frozen=True)
class LoadContract:
    """What generated source must implement.

    ``base``: dotted path of the class the source subclasses exactly once. ``project_modules``: the
    project modules it may import (besides the standard-library allow-list). ``check``: dotted
    path of ``check(instance, context) -> Any`` that the contract child calls, raising on a broken
    contract; ``None`` exercises the mechanism hooks. ``hooks``: the methods reported as overridden.
    """

    base: str = MECHANISM_PATH
    project_modules: frozenset[str] = PROJECT_ALLOWED
    check: str | None = None
    hooks: tuple[str, ...] = HOOKS

    @property
    def is_mechanism(self) -> bool:
        return self.base == MECHANISM_PATH and self.check is None

    def base_class(self) -> type:
        module_path, _, attr = self.base.rpartition(".")
        return getattr(importlib.import_module(module_path), attr)

    def request(self) -> dict[str, Any] | None:
        if self.is_mechanism:
            return None
        return {"base": self.base, "check": self.check, "hooks": list(self.hooks)}


MECHANISM_CONTRACT = LoadContract()


@dataclass(frozen=True)
class LoadedMechanism:
    """A generated mechanism that passed every stage and is ready to attach."""

    name: str
    class_name: str
    digest: str  # full sha256 of the source
    path: str  # relative to the run directory, e.g. "mechanisms/0123abcd4567ef89.py"
    module_name: str
    instance: Mechanism
    hooks_overridden: tuple[str, ...]
    load_seconds: float


@dataclass(frozen=True)
class ContractReport:
    """What the contract-check child reported for a mechanism that passed."""

    class_name: str
    name: str
    hooks_overridden: tuple[str, ...]
    env_keys: tuple[str, ...]  # the child's environment variable names, to prove no secrets leak
    seconds: float


class MechanismLoader:
    """Loads generated mechanism source for one run directory. Thread-safe."""

    def __init__(
        self,
        run_dir: Path,
        *,
        allowed_imports: frozenset[str] | None = None,
        check_timeout_s: float = 10.0,
        check_memory_bytes: int | None = DEFAULT_MEMORY_BYTES,
        contract: LoadContract = MECHANISM_CONTRACT,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.contract = contract
        if allowed_imports is None:
            allowed_imports = DEFAULT_ALLOWED if contract.is_mechanism else STDLIB_ALLOWED | contract.project_modules
        self.allowed_imports = frozenset(allowed_imports)
        self.check_timeout_s = check_timeout_s
        self.check_memory_bytes = check_memory_bytes

    def load(
        self,
        source: str,
        *,
        params: dict[str, Any] | None = None,
        context: ProposalContext | dict[str, Any] | None = None,
    ) -> LoadedMechanism:
        """Run all six stages; ``context`` (optional) is the probe the contract check calls the
        hooks with — pass the loop's current context to check against real data (a plain dict
        for a custom contract's check function)."""
        started = time.perf_counter()
        params = dict(params or {})
        contract = self.contract
        path, digest = self._write(source)
        check_policy(source, allowed_imports=self.allowed_imports, base=contract.base,
                     project_modules=contract.project_modules)  # parse + policy stages
        module_name = _unique_module_name(digest)
        run_contract_check(
            path,
            module_name=f"bilevel_mech_{digest[:16]}_check",
            params=params,
            timeout_s=self.check_timeout_s,
            memory_bytes=self.check_memory_bytes,
            context=context,
            contract=contract,
        )
        module = _import_module(path, module_name)
        base = contract.base_class()
        try:
            cls = _stage("import", lambda: find_mechanism_class(module, base))
            name = _stage("import", lambda: declared_name(cls, base))
            instance = _stage("instantiate", lambda: cls(**params))
        except MechanismError:
            sys.modules.pop(module_name, None)
            raise
        loaded = LoadedMechanism(
            name=name,
            class_name=cls.__name__,
            digest=digest,
            path=path.relative_to(self.run_dir).as_posix(),
            module_name=module_name,
            instance=instance,
            hooks_overridden=tuple(overridden_hooks(cls, base, contract.hooks)),
            load_seconds=time.perf_counter() - started,
        )
        logger.info("loaded mechanism %s (%s) from %s in %.2fs", name, cls.__name__, loaded.path,
                    loaded.load_seconds)
        return loaded

    def unload(self, loaded: LoadedMechanism) -> None:
        """Forget the mechanism's module; the instance lives on only while someone holds it."""
        if sys.modules.pop(loaded.module_name, None) is not None:
            logger.info("unloaded mechanism %s (%s)", loaded.name, loaded.module_name)

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


def _unique_module_name(digest: str) -> str:
    while True:
        with _counter_lock:
            name = f"bilevel_mech_{digest[:16]}_{next(_module_counter)}"
        if name not in sys.modules:
            return name


def _import_module(path: Path, module_name: str) -> Any:
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise MechanismError(f"import: cannot build an import spec for {path}", stage="import")
    module = importlib.util.module_from_spec(spec)
    # Registered so dataclasses / pydantic / typing can resolve the module by name; unload drops it.
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:
        sys.modules.pop(module_name, None)
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise MechanismError(f"import: {module_name} raised {_one_line(exc)}", stage="import",
                             traceback_tail=_tail()) from exc
    return module


def _stage(stage: str, step: Any) -> Any:
    try:
        return step()
    except ContractFailure as failure:
        raise MechanismError(f"{stage}: {failure.rule}: {failure}", stage=stage, rule=failure.rule) from None
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # a SystemExit from generated code is its failure, not ours
        raise MechanismError(f"{stage}: {_one_line(exc)}", stage=stage, traceback_tail=_tail()) from exc


# -- stage 4: the contract check in a child process ---------------------------------------------


def child_environment(home: Path) -> dict[str, str]:
    """The child's whole environment: built from scratch, so no API key or token can leak in."""
    return {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(home),
        "LANG": os.environ.get("LANG") or "C.UTF-8",
        "PYTHONHASHSEED": "0",
        "PYTHONPATH": str(PROJECT_ROOT),
    }


def run_contract_check(
    path: Path,
    *,
    module_name: str,
    params: dict[str, Any] | None = None,
    timeout_s: float = 10.0,
    memory_bytes: int | None = DEFAULT_MEMORY_BYTES,
    context: ProposalContext | dict[str, Any] | None = None,
    contract: LoadContract = MECHANISM_CONTRACT,
) -> ContractReport:
    """Import, instantiate and exercise the mechanism at ``path`` in a child process.

    Raises :class:`MechanismError` with stage ``"contract"``; ``rule`` is ``"timeout"``,
    ``"child-crashed"``, or the child's own rule (``import-failed``, ``instantiate-failed``,
    ``hook-raised: <hook>``, ``hook-return-type: <hook>``, ``contract: exactly one Mechanism
    subclass``, ``name-not-str``).
    """
    try:
        request = json.dumps({
            "path": str(Path(path).resolve()),
            "module_name": module_name,
            "params": params or {},
            "memory_bytes": memory_bytes,
            "context": context.model_dump(mode="json") if isinstance(context, ProposalContext) else context,
            "contract": contract.request(),
        })
    except (TypeError, ValueError) as exc:
        raise MechanismError(f"contract: params or context are not JSON-serialisable: {exc}",
                             stage="contract", rule="params-not-json") from exc
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bilevel-contract-") as home:
        # start_new_session: the child leads its own process group, so killpg reaches everything
        # it started. Resource limits are set by the child itself before it imports the mechanism
        # (preexec_fn is unsafe when this process runs threads, as the controller does).
        proc = subprocess.Popen(
            [sys.executable, "-s", "-B", "-m", "core._contract_check"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=PROJECT_ROOT,
            env=child_environment(Path(home)),
            start_new_session=True,
        )
        try:
            out, err = proc.communicate(request.encode(), timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise MechanismError(
                f"contract: timeout: the check did not finish within {timeout_s:g} s (killed); "
                "remove unbounded loops or heavy work from import time and hooks",
                stage="contract", rule="timeout",
            ) from None
        finally:
            if proc.poll() is None:  # an exception other than the timeout: never leave it running
                _kill_group(proc)
    seconds = time.perf_counter() - started
    result = _parse_result(out)
    if result is None or proc.returncode != 0:
        raise MechanismError(
            f"contract: child-crashed: exit status {proc.returncode} without a verdict",
            stage="contract", rule="child-crashed",
            traceback_tail=err.decode(errors="replace")[-TAIL_CHARS:],
        )
    if not result.get("ok"):
        rule = str(result.get("rule", "unknown"))
        raise MechanismError(f"contract: {rule}: {result.get('message', '')}", stage="contract",
                             rule=rule, traceback_tail=str(result.get("traceback", ""))[-TAIL_CHARS:])
    return ContractReport(
        class_name=result["class_name"],
        name=result["name"],
        hooks_overridden=tuple(result["hooks_overridden"]),
        env_keys=tuple(result["env_keys"]),
        seconds=seconds,
    )


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.communicate()  # reap it and close the pipes


def _parse_result(out: bytes) -> dict | None:
    lines = out.decode(errors="replace").strip().splitlines()
    if not lines:
        return None
    try:
        result = json.loads(lines[-1])
    except json.JSONDecodeError:
        return None
    return result if isinstance(result, dict) else None


# -- library mechanisms ---------------------------------------------------------------------------


def load_library_mechanism(spec: str, params: dict[str, Any] | None = None) -> Mechanism:
    """Instantiate a trusted mechanism shipped with the package, e.g.
    ``"domains.train_opt.mechanisms.tabu:TabuMechanism"``. No policy, no subprocess."""
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
