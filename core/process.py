"""Run a trial command as a child process: its own process group, a hard timeout, no secrets.

The child runs in its own process group with a hard timeout; on overrun the whole group gets
SIGTERM, then SIGKILL, so no grandchild survives. API keys and other secrets are removed from its
environment. Output goes to a log file (never a pipe that could fill up); :func:`parse_summary`
reads ``key: value`` lines after the last ``---``. On Linux the child dies with the controller, and
:func:`reap_stale_trial` kills what a killed controller left behind before a resumed trial starts.

Every domain that runs a command per trial uses these helpers (train_opt's and script_opt's
executors). While a trial runs, ``on_tail(log_tail, elapsed_s)`` is called about once a second with
the end of its log, so a domain can show the trial's progress.

Inside a pool's slot (:mod:`core.pool`, ``--parallel K``) the trial also gets the slot's environment
(``CUDA_VISIBLE_DEVICES`` or a thread budget; a variable the executor sets itself wins), is pinned to
the slot's cores, and is killed as a group when the pool is cancelled.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from core.pool import POLL_S, TrialCancelled, cancelled, current_slot

SECRET_ENV = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL)", re.IGNORECASE)
_SUMMARY = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*:\s*(\S+)\s*$")
LOG_TAIL_CHARS = 3000
SUMMARY_WINDOW_CHARS = 64_000  # the summary block is the end of the log; a flood before it is not read
# a script that reports its own failure prints FAIL as the last word of a line (autoresearch does)
FAIL = re.compile(r"(?:^|\s)FAIL\s*$", re.MULTILINE)
PROGRESS_EVERY_S = 1.0
PROGRESS_TAIL_BYTES = 4096
TailCallback = Callable[[str, float], None]  # (end of the log, seconds since the trial started)


def scrubbed_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not SECRET_ENV.search(k)}
    env.update(extra or {})
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def parse_summary(output: str) -> dict[str, float]:
    """``key: value`` lines after the last ``---`` line; carriage-return progress lines tolerated."""
    lines = re.split(r"[\r\n]+", output)
    try:
        start = len(lines) - 1 - lines[::-1].index("---")
    except ValueError:
        start = -1
    metrics: dict[str, float] = {}
    for line in lines[start + 1:]:
        match = _SUMMARY.match(line)
        if not match:
            continue
        try:
            metrics[match.group(1)] = float(match.group(2))
        except ValueError:
            continue
    return metrics


def read_tail(path: Path, n: int = LOG_TAIL_CHARS) -> str:
    if not path.exists():
        return ""
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - n * 4))
        text = fh.read().decode("utf-8", errors="replace")
    # keep only the last state of \r-overwritten progress lines
    text = "\n".join(seg.split("\r")[-1] for seg in text.split("\n"))
    return text[-n:]


def kill_group(proc: subprocess.Popen, grace_s: float = 3.0) -> None:
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            # the leader is gone; make sure nothing else of the group survives
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


PGID_FILE = ".trial.pgid"


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the trial gets SIGKILL if the controller dies (e.g. is SIGKILLed) mid-trial."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
    except OSError:
        pass


def _child_setup(cpus: tuple[int, ...]) -> Callable[[], None]:
    def setup() -> None:  # pragma: no cover - runs in the child between fork and exec
        _die_with_parent()
        if cpus:
            os.sched_setaffinity(0, cpus)

    return setup


def reap_stale_trial(cwd: Path) -> None:
    """Kill what is left of a trial whose controller was killed: the group recorded in ``cwd``.

    The trial's own process dies with its parent, but its children (data workers, a compiler) may
    not; a resumed run must not train twice at once in the same folder."""
    marker = Path(cwd) / PGID_FILE
    try:
        pgid = int(marker.read_text().strip())
    except (OSError, ValueError):
        return
    for pid_dir in Path("/proc").glob("[0-9]*"):
        try:
            if os.getpgid(int(pid_dir.name)) == pgid and (pid_dir / "cwd").resolve() == Path(cwd).resolve():
                os.killpg(pgid, signal.SIGKILL)
                break
        except (OSError, ValueError):
            continue
    marker.unlink(missing_ok=True)


def tail_bytes(path: Path, n: int = PROGRESS_TAIL_BYTES) -> str:
    """The last ``n`` bytes of ``path`` as text ("" when unreadable)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - n))
            return fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def _wait(proc: subprocess.Popen, *, timeout_s: float, started: float, log_path: Path,
          on_tail: TailCallback | None) -> int:
    """``proc.wait`` with the same deadline, handing the log's tail to ``on_tail`` about once a second
    (and, in a pool's slot, giving up when the pool is cancelled)."""
    pooled = current_slot() is not None
    if on_tail is None and not pooled:
        return proc.wait(timeout=timeout_s)
    deadline = started + timeout_s
    shown = started
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise subprocess.TimeoutExpired(proc.args, timeout_s)
        if cancelled():
            raise TrialCancelled("the batch was cancelled")
        try:
            return proc.wait(timeout=min(POLL_S if pooled else PROGRESS_EVERY_S, left))
        except subprocess.TimeoutExpired:
            if on_tail is not None and time.monotonic() - shown >= PROGRESS_EVERY_S:
                shown = time.monotonic()
                on_tail(tail_bytes(log_path), shown - started)


def run_command(cmd: list[str], *, cwd: Path, log_path: Path, timeout_s: float,
                env: dict[str, str] | None = None,
                on_tail: TailCallback | None = None) -> tuple[int | None, bool, float]:
    """Run ``cmd``; return (exit code or None, timed out, seconds)."""
    reap_stale_trial(cwd)
    slot = current_slot()
    if slot is not None:
        env = {**slot.environment(), **(env or {})}
    started = time.monotonic()
    with open(log_path, "wb") as log:
        setup = _child_setup(slot.cpus if slot is not None else ()) if sys.platform.startswith("linux") else None
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=scrubbed_env(env), start_new_session=True, preexec_fn=setup)
        (Path(cwd) / PGID_FILE).write_text(str(proc.pid))
        try:
            code = _wait(proc, timeout_s=timeout_s, started=started, log_path=log_path, on_tail=on_tail)
            timed_out = False
        except subprocess.TimeoutExpired:
            kill_group(proc)
            code, timed_out = None, True
        except BaseException:
            kill_group(proc, grace_s=0.5)
            raise
        else:
            # the leader exited by itself: make sure nothing it started outlives the trial
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        finally:
            (Path(cwd) / PGID_FILE).unlink(missing_ok=True)
    return code, timed_out, time.monotonic() - started
