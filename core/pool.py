"""Where the trials of a batch run: local slots (threads that each wait on a trial process) or Ray tasks.

A **slot** is one place a trial can run: its index, the environment a trial there gets (one GPU through
``CUDA_VISIBLE_DEVICES``, or a CPU thread budget through ``OMP_NUM_THREADS`` & co. and
``BILEVEL_THREADS``) and, for CPU slots, the cores it is pinned to. The thread count is part of a
run's identity: it is a setting (saved in ``settings.json``) and every batched record carries its
slot in ``info["slot"]``.

While an executor runs in a slot, :func:`current_slot` returns it: :func:`core.process.run_command`
adds the slot's environment and CPU affinity to the trial process and gives up (killing the process
group) when the pool is cancelled, and :func:`slot_workdir` gives each slot its own copy of a working
directory, so two trials never write the same ``train.py``.

:class:`LocalPool` runs up to ``size`` executions at once in threads of this process (an executor that
holds in-process state declares ``concurrent = False`` and runs in the caller's thread, one at a
time). :class:`RayPool` runs each as a Ray task with the resources it declares (``num_cpus``,
``num_gpus``) on an existing cluster (``address``) or a local instance; the executor and its inputs
are pickled to the worker, and the run directory must be on storage the nodes share. Ray is imported
lazily: it is an optional extra (``pip install -e '.[ray]'``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time
import traceback
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from core.errors import UserError
from core.plugins import ExecContext, Executor
from core.records import ExecutionResult, Proposal

THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
              "VECLIB_MAXIMUM_THREADS", "BILEVEL_THREADS")
RAY_MISSING = "--executor ray needs Ray: pip install -e '.[ray]'"
PROJECT_ROOT = Path(__file__).resolve().parents[1]
_COPY_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".trial.pgid")
POLL_S = 0.2


class TrialCancelled(BaseException):
    """The pool was cancelled (a stop, Ctrl-C) while this trial ran; its process group was killed."""


@dataclass(frozen=True)
class Slot:
    index: int
    env: tuple[tuple[str, str], ...] = ()
    cpus: tuple[int, ...] = ()
    gpu: str | None = None
    threads: int | None = None
    cancel: Any = field(default=None, compare=False, repr=False)  # a threading.Event (local slots only)

    def environment(self) -> dict[str, str]:
        return dict(self.env)

    def describe(self) -> dict[str, Any]:
        """What a record journals about where it ran."""
        out: dict[str, Any] = {"index": self.index}
        if self.threads is not None:
            out["threads"] = self.threads
        if self.cpus:
            out["cpus"] = list(self.cpus)
        if self.gpu is not None:
            out["gpu"] = self.gpu
        return out


_SLOT: ContextVar[Slot | None] = ContextVar("bilevel_slot", default=None)


def current_slot() -> Slot | None:
    """The slot the calling executor runs in, ``None`` outside a pool (a plain K = 1 run)."""
    return _SLOT.get()


@contextlib.contextmanager
def use_slot(slot: Slot | None) -> Iterator[None]:
    token = _SLOT.set(slot)
    try:
        yield
    finally:
        _SLOT.reset(token)


def cancelled() -> bool:
    slot = current_slot()
    return bool(slot is not None and slot.cancel is not None and slot.cancel.is_set())


def slot_workdir(base: Path) -> Path:
    """``base`` for slot 0 (and outside a pool); a copy of it, made once, for slot ``i`` ≥ 1."""
    slot = current_slot()
    base = Path(base)
    if slot is None or slot.index == 0:
        return base
    dest = base.with_name(f"{base.name}.slot{slot.index}")
    if not dest.is_dir():
        staging = base.with_name(f".{base.name}.slot{slot.index}.{os.getpid()}.tmp")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(base, staging, ignore=_COPY_IGNORE)
        staging.rename(dest)
    return dest


def thread_env(threads: int | None) -> tuple[tuple[str, str], ...]:
    return tuple((k, str(threads)) for k in THREAD_ENV) if threads else ()


def local_slots(size: int, *, gpus: Sequence[str] = (), threads: int | None = None) -> list[Slot]:
    """``size`` slots: round-robin over ``gpus`` when given, else CPU slots of ``threads`` threads,
    pinned to disjoint cores when the machine has enough of them."""
    if gpus:
        return [Slot(index=i, gpu=str(gpus[i % len(gpus)]), threads=threads,
                     env=(("CUDA_VISIBLE_DEVICES", str(gpus[i % len(gpus)])), *thread_env(threads)))
                for i in range(size)]
    available = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    pin = bool(threads) and size > 1 and size * threads <= len(available)
    return [Slot(index=i, threads=threads, env=thread_env(threads),
                 cpus=tuple(available[i * threads:(i + 1) * threads]) if pin and threads else ())
            for i in range(size)]


@dataclass(frozen=True)
class Job:
    key: int
    proposal: Proposal
    ctx: ExecContext


@dataclass(frozen=True)
class Done:
    """One finished execution: its result, or the traceback of what the executor raised."""

    key: int
    result: ExecutionResult | None
    error: str = ""
    exception: BaseException | None = None
    slot: Slot | None = None
    seconds: float = 0.0


def _run_in_slot(executor: Executor, job: Job, slot: Slot) -> Done:
    started = time.monotonic()
    with use_slot(slot):
        try:
            result = executor.execute(job.proposal, job.ctx)
        except Exception as exc:  # classified as a crash by the controller, like a K = 1 trial
            return Done(job.key, None, f"{type(exc).__name__}: {exc}\n{traceback.format_exc()[-2000:]}", exc,
                        slot, time.monotonic() - started)
    return Done(job.key, result, slot=slot, seconds=time.monotonic() - started)


class TrialPool:
    """Runs executions; :meth:`run` yields them in the order they finish."""

    kind: Literal["local", "ray"] = "local"
    size: int = 1

    def run(self, executor: Executor, jobs: Sequence[Job]) -> Iterator[Done]:
        raise NotImplementedError

    def close(self) -> None:
        """Release threads, or the Ray connection this pool opened."""


class LocalPool(TrialPool):
    """Up to ``size`` executions at once, each in a thread holding a slot. Closing the generator
    early (a stop, Ctrl-C) cancels the rest: their trial processes are killed as groups."""

    kind = "local"

    def __init__(self, *, size: int, gpus: Sequence[str] = (), threads: int | None = None) -> None:
        if size < 1:
            raise ValueError("size must be >= 1")
        self.size = size
        self.slots = local_slots(size, gpus=gpus, threads=threads)
        self._threads: ThreadPoolExecutor | None = None

    def run(self, executor: Executor, jobs: Sequence[Job]) -> Iterator[Done]:
        if not getattr(executor, "concurrent", True):  # in-process state: one at a time, here
            for job in jobs:
                yield _run_in_slot(executor, job, self.slots[0])
            return
        if self._threads is None:
            self._threads = ThreadPoolExecutor(max_workers=self.size, thread_name_prefix="trial-slot")
        cancel = threading.Event()
        free = [Slot(s.index, s.env, s.cpus, s.gpu, s.threads, cancel) for s in self.slots]
        waiting = list(jobs)
        running: dict[Future, Slot] = {}
        try:
            while waiting or running:
                while waiting and free:
                    slot = free.pop(0)
                    running[self._threads.submit(_run_in_slot, executor, waiting.pop(0), slot)] = slot
                done, _ = wait(list(running), timeout=1.0, return_when=FIRST_COMPLETED)
                for future in sorted(done, key=lambda f: running[f].index):
                    free.append(running.pop(future))
                    free.sort(key=lambda s: s.index)
                    yield future.result()
        finally:
            if running:
                cancel.set()
                for future in running:
                    with contextlib.suppress(BaseException):
                        future.result()

    def close(self) -> None:
        if self._threads is not None:
            self._threads.shutdown(wait=True)
            self._threads = None


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UserError(RAY_MISSING) from None
    return ray


def _ray_execute(executor: Executor, job: Job, slot: Slot) -> Done:
    """The body of a Ray task: run in the slot, note the GPU Ray gave it."""
    gpu = os.environ.get("CUDA_VISIBLE_DEVICES") or None
    done = _run_in_slot(executor, job, Slot(slot.index, slot.env, (), gpu, slot.threads))
    return Done(done.key, done.result, done.error, None, done.slot, done.seconds)  # exceptions may not pickle


class RayPool(TrialPool):
    """Each execution is a Ray task asking for ``cpus`` CPUs and ``gpus`` GPUs (Ray sets
    ``CUDA_VISIBLE_DEVICES``), at most ``size`` in flight. ``address=None``: the instance this process
    already joined, else a new local one. The project reaches workers as the job's ``py_modules``."""

    kind = "ray"

    def __init__(self, *, size: int, address: str | None = None, cpus: float = 1.0, gpus: float = 0.0,
                 threads: int | None = None, init_kwargs: dict[str, Any] | None = None) -> None:
        self.size = size
        self.ray = _import_ray()
        self.started = not self.ray.is_initialized()
        if self.started:
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING,
                                      "runtime_env": {"py_modules": [str(PROJECT_ROOT / "core"), str(PROJECT_ROOT / "domains")]}}
            kwargs.update(init_kwargs or {})
            self.ray.init(address=address, **kwargs)
        options: dict[str, Any] = {"num_cpus": cpus, "max_retries": 0}
        if gpus:
            options["num_gpus"] = gpus
        self.task = self.ray.remote(_ray_execute).options(**options)
        self.slots = [Slot(index=i, threads=threads, env=thread_env(threads)) for i in range(size)]

    def run(self, executor: Executor, jobs: Sequence[Job]) -> Iterator[Done]:
        ray = self.ray
        free = list(self.slots)
        waiting = list(jobs)
        running: dict[Any, tuple[Slot, int]] = {}
        shared = ray.put(executor)
        try:
            while waiting or running:
                while waiting and free:
                    slot, job = free.pop(0), waiting.pop(0)
                    running[self.task.remote(shared, job, slot)] = (slot, job.key)
                ready, _ = ray.wait(list(running), num_returns=1, timeout=1.0)
                for ref in ready:
                    slot, key = running.pop(ref)
                    free.append(slot)
                    free.sort(key=lambda s: s.index)
                    try:
                        done = ray.get(ref)
                    except Exception as exc:  # the task or its worker died
                        done = Done(key, None, f"Ray task failed: {exc}"[:2000], None, slot)
                    yield done
        finally:
            for ref in running:
                ray.cancel(ref, force=True)  # the worker dies; its trial process dies with it

    def close(self) -> None:
        if self.started and self.ray.is_initialized():
            self.ray.shutdown()
            self.started = False


def make_pool(settings: Any) -> TrialPool | None:
    """The pool a run's settings ask for, or ``None`` for today's one-at-a-time run (K = 1, local,
    no GPU list, no thread budget)."""
    k = getattr(settings, "parallel", 1)
    executor = getattr(settings, "executor", "local")
    gpus = tuple(getattr(settings, "gpus", ()) or ())
    threads = getattr(settings, "trial_threads", None)
    if executor == "ray":
        return RayPool(size=k, address=getattr(settings, "ray_address", None), cpus=settings.trial_cpus,
                       gpus=settings.trial_gpus, threads=threads)
    if k == 1 and not gpus and not threads:
        return None
    return LocalPool(size=k, gpus=gpus, threads=threads)
