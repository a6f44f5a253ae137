"""Run one training trial as a child process and parse its summary.

The child runs in its own process group with a hard timeout; on overrun the whole group gets
SIGTERM, then SIGKILL, so no grandchild (a dataloader worker, a compiler) survives. API keys and
other secrets are removed from its environment. Output goes to a log file (never a pipe that could
fill up), and the result is read from the ``key: value`` lines after the last ``---``.

While a trial runs, the log's tail is read about once a second and its latest progress line is
handed to ``on_progress`` (:mod:`domains.train_opt.progress`): by default an updating terminal line
with elapsed / remaining time and the latest loss, silent when the output is not a terminal.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from core.plugins import ExecContext, Executor
from core.records import ExecutionResult, Proposal
from core.state import atomic_write_text
from domains.train_opt import target as tgt
from domains.train_opt.progress import ProgressLine, TrialProgress, parse_progress

SECRET_ENV = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL)", re.IGNORECASE)
_SUMMARY = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*:\s*(\S+)\s*$")
LOG_TAIL_CHARS = 3000
SUMMARY_WINDOW_CHARS = 64_000  # the summary block is the end of the log; a flood before it is not read
PROGRESS_EVERY_S = 1.0
PROGRESS_TAIL_BYTES = 4096
# karpathy/autoresearch prints FAIL straight after its last \r progress line, so in the log it ends
# that line ("step 00042 (3.1%) | loss: 9.1 | ... FAIL"): a FAIL is a line's last word.
_FAIL = re.compile(r"(?:^|\s)FAIL\s*$", re.MULTILINE)
ProgressCallback = Callable[[TrialProgress], None]


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


def _tail_bytes(path: Path, n: int = PROGRESS_TAIL_BYTES) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - n))
            return fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def _wait(proc: subprocess.Popen, *, timeout_s: float, started: float, log_path: Path,
          on_progress: ProgressCallback | None) -> int:
    """``proc.wait`` with the same deadline, reporting progress about once a second."""
    if on_progress is None:
        return proc.wait(timeout=timeout_s)
    deadline = started + timeout_s
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise subprocess.TimeoutExpired(proc.args, timeout_s)
        try:
            return proc.wait(timeout=min(PROGRESS_EVERY_S, left))
        except subprocess.TimeoutExpired:
            on_progress(parse_progress(_tail_bytes(log_path), elapsed_s=time.monotonic() - started,
                                       timeout_s=timeout_s))


def run_command(cmd: list[str], *, cwd: Path, log_path: Path, timeout_s: float,
                env: dict[str, str] | None = None,
                on_progress: ProgressCallback | None = None) -> tuple[int | None, bool, float]:
    """Run ``cmd``; return (exit code or None, timed out, seconds). ``on_progress`` gets the
    trial's latest progress about once a second while it runs."""
    reap_stale_trial(cwd)
    started = time.monotonic()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=scrubbed_env(env), start_new_session=True,
                                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
        (Path(cwd) / PGID_FILE).write_text(str(proc.pid))
        try:
            code = _wait(proc, timeout_s=timeout_s, started=started, log_path=log_path, on_progress=on_progress)
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


class TrainExecutor(Executor):
    """Writes the candidate ``train.py`` (incumbent + changes) and runs it in the working copy.

    ``workdir`` is the run's copy of the target directory; trials run there one at a time, so
    ``import prepare`` resolves exactly as in the user's clone. Each trial keeps its ``train.py``,
    its diff against the parent and its log under the trial directory.
    """

    def __init__(self, *, workdir: Path, original: Path, command: list[str] | None = None, timeout_s: float,
                 env: dict[str, str] | None = None, metric: str = "val_bpb",
                 progress: ProgressLine | Literal["auto"] | None = "auto") -> None:
        self.workdir = Path(workdir)
        self.original = Path(original)
        self.command = command or [sys.executable, "train.py"]
        self.timeout_s = timeout_s
        self.env = dict(env or {})
        self.metric = metric
        # "auto": an updating line on a terminal's stderr, nothing otherwise; None: no progress
        self.progress = ProgressLine() if progress == "auto" else progress

    def execute(self, proposal: Proposal, ctx: ExecContext) -> ExecutionResult:
        parent = (ctx.run_dir / ctx.incumbent) if ctx.incumbent else self.original
        parent_src = parent.read_text(encoding="utf-8")
        try:
            candidate = tgt.apply_changes(parent_src, dict(proposal.changes))
        except ValueError as exc:
            return ExecutionResult(status="crash", log_tail=f"edit rejected: {exc}", detail={"error": f"edit rejected: {exc}"})
        artifact = ctx.trial_dir / "train.py"
        atomic_write_text(artifact, candidate)
        atomic_write_text(ctx.trial_dir / "diff.patch", tgt.diff(parent_src, candidate))
        atomic_write_text(self.workdir / "train.py", candidate)
        log_path = ctx.trial_dir / "run.log"
        line = self.progress if self.progress is not None and self.progress.enabled else None
        label = f"trial {ctx.iteration}"
        try:
            code, timed_out, seconds = run_command(
                self.command, cwd=self.workdir, log_path=log_path, timeout_s=self.timeout_s, env=self.env,
                on_progress=(lambda p: line.update(label, p)) if line is not None else None)
        finally:
            if line is not None:
                line.close()
        rel = str(artifact.relative_to(ctx.run_dir))
        log_tail = read_tail(log_path)
        if timed_out:
            return ExecutionResult(status="timeout", artifact=rel, log_tail=log_tail, duration_s=seconds,
                                   detail={"error": f"killed after {self.timeout_s:g}s"})
        metrics = parse_summary(read_tail(log_path, SUMMARY_WINDOW_CHARS))  # never the whole log: it may be GBs
        value = metrics.get(self.metric)
        failed = _FAIL.search(log_tail) is not None
        if value is None or not math.isfinite(value):
            status = "fail" if failed else "crash"
            return ExecutionResult(status=status, metrics=metrics, artifact=rel, log_tail=log_tail, duration_s=seconds,
                                   detail={"error": f"{'FAIL reported' if failed else 'no ' + self.metric + ' line'} (exit {code})"})
        return ExecutionResult(status="ok", metrics=metrics, artifact=rel, log_tail=log_tail, duration_s=seconds,
                               detail={"exit_code": code, "command": shlex.join(self.command),
                                       "exec_seconds": round(seconds, 3)})
