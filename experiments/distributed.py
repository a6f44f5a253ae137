"""Where repeats run: in this process, in a local process pool, or as Ray tasks on a cluster.

Every executor yields ``(spec, row, error)`` as repeats finish; only the caller (the parent process)
appends rows to the results file, so rows never interleave.

Ray: each repeat is a remote task asking for ``num_gpus`` (one GPU per repeat on a GPU cluster) or
``num_cpus=threads``. When the runner connects, the project reaches the workers as the job's
``py_modules`` (``core``, ``domains``, ``experiments``), so a cluster needs only Ray and the
dependencies installed, not this checkout.
A worker that sees the ablation directory (same machine, or a shared filesystem — recognised by the
ablation's id in ``ablation.json``) runs the repeat in place; otherwise the driver ships the
repeat's run directory to it as a tar archive and unpacks the finished one it gets back, so a
cluster without shared storage works too (a task killed midway then restarts from the driver's copy).
"""

from __future__ import annotations

import io
import json
import logging
import os
import queue
import shutil
import signal
import tarfile
import tempfile
from collections.abc import Iterator
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from core.errors import UserError
from experiments.groups import RepeatSpec, prepare_run_dir, run_repeat

Outcome = tuple[RepeatSpec, "dict[str, Any] | None", "str | None"]
RAY_MISSING = "install the ray extra: pip install -e '.[ray]'"
PROJECT_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "domains", "experiments")


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _guarded(spec: RepeatSpec) -> tuple[dict[str, Any] | None, str | None]:
    try:
        return run_repeat(spec), None
    except UserError as exc:
        return None, str(exc)
    except Exception as exc:  # one broken repeat must not take the others down
        return None, _describe(exc)


# -- local ----------------------------------------------------------------------------------------
STOP_GRACE_S = 30.0


def _stop_on_sigterm() -> None:
    """In a worker: ignore the terminal's Ctrl-C (the parent decides) and turn the parent's SIGTERM
    into one KeyboardInterrupt, which the inner loop journals as a stop before the trial is killed."""

    def stop(*_: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, stop)


def _worker(slot: int, inbox: Any, results: Any) -> None:
    """A pool process: run the repeats the parent hands it until it gets ``None`` or is stopped."""
    _stop_on_sigterm()
    try:
        for index, spec in iter(inbox.get, None):
            row, error = _guarded(spec)
            results.put((slot, index, row, error))
    except KeyboardInterrupt:
        return


class _Slot:
    """One pool process and the repeat it is running (the parent always knows who runs what)."""

    def __init__(self, ctx: Any, slot: int, results: Any) -> None:
        self.inbox = ctx.Queue()
        self.process = ctx.Process(target=_worker, args=(slot, self.inbox, results), daemon=False)
        self.process.start()
        self.index: int | None = None


def run_local(specs: list[RepeatSpec], *, workers: int) -> Iterator[Outcome]:
    """Run ``specs`` here (``workers == 1``) or in a pool of ``workers`` spawned processes.

    Each process is handed one repeat at a time, so nothing is queued behind a stopped one. Stopping
    the generator (Ctrl-C or SIGTERM in the parent) sends each busy process one SIGTERM: its current
    trial is killed and journaled as stopped, and the next run resumes it."""
    for spec in specs:
        prepare_run_dir(spec)
    if workers <= 1:
        for spec in specs:
            row, error = _guarded(spec)
            yield spec, row, error
        return
    ctx = get_context("spawn")
    results = ctx.Queue()
    slots = [_Slot(ctx, i, results) for i in range(min(workers, len(specs)))]
    waiting = list(range(len(specs)))
    try:
        while waiting or any(s.index is not None for s in slots):
            for slot in slots:
                if slot.index is None and waiting:
                    slot.index = waiting.pop(0)
                    slot.inbox.put((slot.index, specs[slot.index]))
            try:
                number, index, row, error = results.get(timeout=1.0)
            except queue.Empty:
                for number, slot in enumerate(slots):
                    if slot.index is not None and not slot.process.is_alive() and results.empty():
                        lost, code = slot.index, slot.process.exitcode
                        slots[number] = _Slot(ctx, number, results)
                        yield specs[lost], None, f"worker process died (exit code {code})"
                continue
            slots[number].index = None
            yield specs[index], row, error
    finally:
        for slot in slots:
            if slot.index is None:
                slot.inbox.put(None)
            elif slot.process.is_alive():
                slot.process.terminate()  # SIGTERM: the worker stops its repeat cleanly
        for slot in slots:
            slot.process.join(STOP_GRACE_S)
            if slot.process.is_alive():
                slot.process.kill()
                slot.process.join()


# -- shipping run directories ---------------------------------------------------------------------
def pack(path: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(path, arcname=".", filter=lambda info: None if info.name.endswith("/.lock") else info)
    return buffer.getvalue()


def unpack(data: bytes, path: Path) -> None:
    """Replace ``path`` by the archive's content (extracted next to it first, then swapped in)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            tar.extractall(staging, filter="data")
        old = path.with_name(f".{path.name}.old")
        if path.exists():
            path.rename(old)
        staging.rename(path)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def sees_ablation(out: str, ablation_id: str) -> bool:
    try:
        return json.loads((Path(out) / "ablation.json").read_text(encoding="utf-8")).get("id") == ablation_id
    except (OSError, ValueError):
        return False


def remote_repeat(spec: RepeatSpec, ablation_id: str, archive: bytes) -> tuple[dict[str, Any] | None, str | None, bytes | None]:
    """The body of a Ray task: run in place when the ablation directory is visible, else in a
    scratch copy unpacked from ``archive`` (returned packed when done)."""
    if sees_ablation(spec.out, ablation_id):
        row, error = _guarded(spec)
        return row, error, None
    with tempfile.TemporaryDirectory(prefix="bilevel-repeat-") as scratch:
        path = Path(scratch) / spec.name
        unpack(archive, path)
        try:
            row = run_repeat(spec, run_dir=path)
            error = None
        except UserError as exc:
            row, error = None, str(exc)
        except Exception as exc:
            row, error = None, _describe(exc)
        return row, error, pack(path)


# -- Ray ------------------------------------------------------------------------------------------
def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UserError(RAY_MISSING) from None
    return ray


def provider_env(provider: str) -> dict[str, str]:
    """The key / base-URL variables the chosen provider reads (from the environment or ``.env``),
    so workers on other machines can call it. Nothing is passed for providers that need none."""
    from dotenv import dotenv_values, find_dotenv

    from core.llm.registry import PROVIDERS

    spec = PROVIDERS.get(provider.split(":", 1)[0])
    names = [n for n in (spec.key_env, spec.base_url_env) if n] if spec else []
    dotenv = dotenv_values(find_dotenv(usecwd=True)) if names else {}
    env = {n: os.environ.get(n) or dotenv.get(n) for n in names}
    return {k: v for k, v in env.items() if v}


def resources(*, threads: int, gpus_per_repeat: float | None) -> dict[str, float]:
    if gpus_per_repeat is None:
        import torch

        gpus_per_repeat = 1.0 if torch.cuda.is_available() else 0.0
    return {"num_gpus": gpus_per_repeat} if gpus_per_repeat > 0 else {"num_cpus": threads}


def job_runtime_env(provider: str) -> dict[str, Any]:
    """What a Ray job needs to run repeats: the project's packages and the provider's variables."""
    return {"py_modules": [str(PROJECT_ROOT / p) for p in PACKAGES],
            "env_vars": {"PYTHONUNBUFFERED": "1", **provider_env(provider)}}


def run_ray(specs: list[RepeatSpec], *, address: str | None, ablation_id: str, threads: int,
            gpus_per_repeat: float | None, provider: str) -> Iterator[Outcome]:
    """Run each repeat as a Ray task on the cluster at ``address`` (default: the instance this process
    already started, else a new local one). An instance started elsewhere must make the project
    importable itself (an install, or ``runtime_env=job_runtime_env(...)`` in its ``ray.init``)."""
    ray = _import_ray()
    options: dict[str, Any] = {**resources(threads=threads, gpus_per_repeat=gpus_per_repeat), "max_retries": 0}
    started = not ray.is_initialized()
    if not started:
        env = provider_env(provider)
        if env:  # a task-level runtime_env can carry variables but not local code
            options["runtime_env"] = {"env_vars": env}
    else:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
                 runtime_env=job_runtime_env(provider))
    task = ray.remote(remote_repeat).options(**options)
    futures = {}
    for spec in specs:
        path = prepare_run_dir(spec)
        futures[task.remote(spec, ablation_id, pack(path))] = spec
    pending = list(futures)
    try:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            spec = futures[done[0]]
            try:
                row, error, archive = ray.get(done[0])
            except Exception as exc:  # the task or its worker died
                yield spec, None, _describe(exc)
                continue
            if archive is not None:
                unpack(archive, spec.run_dir)
            yield spec, row, error
    finally:
        for ref in pending:
            ray.cancel(ref)  # a running task gets a KeyboardInterrupt: its trial is killed and journaled
        if started:
            ray.shutdown()
