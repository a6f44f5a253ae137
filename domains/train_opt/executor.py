"""Run one training trial as a child process and parse its summary.

The child is run by :func:`core.process.run_command`: its own process group with a hard timeout (on
overrun the whole group gets SIGTERM, then SIGKILL, so no grandchild survives), no API keys in its
environment, output to a log file; the result is read from the ``key: value`` lines after the last
``---``.

While a trial runs, the log's tail is read about once a second and its latest progress line is
handed to ``on_progress`` (:mod:`domains.train_opt.progress`): by default an updating terminal line
with elapsed / remaining time and the latest loss, silent when the output is not a terminal. With
``early_stop`` (a :class:`~domains.train_opt.mechanisms.early_stop.CurveRule`, ``--early-stop``) the
same readings are compared with the incumbent's learning curve, and a trial clearly worse than the
incumbent at the same point of training is stopped and recorded as FAIL "stopped early: ...".
"""

from __future__ import annotations

import math
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Literal

from core.plugins import ExecContext, Executor
from core.pool import slot_workdir
from core.process import (  # noqa: F401 - re-exported: the executor's helpers live in core
    FAIL,
    LOG_TAIL_CHARS,
    SECRET_ENV,
    SUMMARY_WINDOW_CHARS,
    kill_group,
    parse_summary,
    read_tail,
    reap_stale_trial,
    run_command,
    scrubbed_env,
)
from core.records import ExecutionResult, Proposal
from core.space import MultipleOf
from core.state import atomic_write_text
from domains.train_opt import target as tgt
from domains.train_opt.mechanisms.early_stop import CurveRule, StoppedEarly, for_incumbent
from domains.train_opt.progress import ProgressLine, parse_progress

# karpathy/autoresearch prints FAIL straight after its last \r progress line, so in the log it ends
# that line ("step 00042 (3.1%) | loss: 9.1 | ... FAIL"): a FAIL is a line's last word (core.process.FAIL).
_FAIL = FAIL


class TrainExecutor(Executor):
    """Writes the candidate ``train.py`` (incumbent + changes) and runs it in the working copy.

    ``workdir`` is the run's copy of the target directory; trials run there one at a time, so
    ``import prepare`` resolves exactly as in the user's clone (with ``--parallel K`` each slot of
    the pool has its own copy, :func:`core.pool.slot_workdir`). Each trial keeps its ``train.py``,
    its diff against the parent and its log under the trial directory.

    ``seeded``: a trial's training seed (:attr:`ExecContext.seed`, a replicate's) reaches ``train.py``
    as ``BILEVEL_SEED``. :meth:`config_key` is the full set of constants a candidate gives;
    :meth:`infeasible` checks the batch constraint (``TOTAL_BATCH_SIZE`` a multiple of
    ``DEVICE_BATCH_SIZE × MAX_SEQ_LEN``, the latter read from the target's ``prepare.py``) before a
    trial is spent on a configuration that can never run.
    """

    seeded = True

    def __init__(self, *, workdir: Path, original: Path, command: list[str] | None = None, timeout_s: float,
                 env: dict[str, str] | None = None, metric: str = "val_bpb",
                 progress: ProgressLine | Literal["auto"] | None = "auto", early_stop: CurveRule | None = None) -> None:
        self.workdir = Path(workdir)
        self.original = Path(original)
        self.command = command or [sys.executable, "train.py"]
        self.timeout_s = timeout_s
        self.env = dict(env or {})
        self.metric = metric
        # "auto": an updating line on a terminal's stderr, nothing otherwise; None: no progress
        self.progress = ProgressLine() if progress == "auto" else progress
        self.early_stop = early_stop  # None: every trial runs to its end

    def candidate_values(self, proposal: Proposal, incumbent: str | None, run_dir: Path) -> dict[str, Any]:
        parent = (run_dir / incumbent) if incumbent else self.original
        return tgt.values(tgt.apply_changes(parent.read_text(encoding="utf-8"), dict(proposal.changes)))

    def config_key(self, proposal: Proposal, incumbent: str | None, run_dir: Path) -> Any:
        return {"constants": self.candidate_values(proposal, incumbent, run_dir)}

    def infeasible(self, proposal: Proposal, incumbent: str | None, run_dir: Path) -> str | None:
        if not {"TOTAL_BATCH_SIZE", "DEVICE_BATCH_SIZE"} & set(proposal.changes):
            return None
        prepare = self.workdir / "prepare.py"
        seq = tgt.values(prepare.read_text(encoding="utf-8")).get("MAX_SEQ_LEN") if prepare.is_file() else None
        config = self.candidate_values(proposal, incumbent, run_dir)
        if not isinstance(seq, int) or not all(isinstance(config.get(n), int) for n in ("TOTAL_BATCH_SIZE", "DEVICE_BATCH_SIZE")):
            return None
        return MultipleOf("TOTAL_BATCH_SIZE", ("DEVICE_BATCH_SIZE", "MAX_SEQ_LEN")).reason({**config, "MAX_SEQ_LEN": seq})

    def execute(self, proposal: Proposal, ctx: ExecContext) -> ExecutionResult:
        parent = (ctx.run_dir / ctx.incumbent) if ctx.incumbent else self.original
        parent_src = parent.read_text(encoding="utf-8")
        env = self.env if ctx.seed is None else {**self.env, "BILEVEL_SEED": str(ctx.seed)}
        try:
            candidate = tgt.apply_changes(parent_src, dict(proposal.changes))
        except ValueError as exc:
            return ExecutionResult(status="crash", log_tail=f"edit rejected: {exc}", detail={"error": f"edit rejected: {exc}"})
        artifact = ctx.trial_dir / "train.py"
        atomic_write_text(artifact, candidate)
        atomic_write_text(ctx.trial_dir / "diff.patch", tgt.diff(parent_src, candidate))
        workdir = slot_workdir(self.workdir)
        atomic_write_text(workdir / "train.py", candidate)
        log_path = ctx.trial_dir / "run.log"
        line = self.progress if self.progress is not None and self.progress.enabled else None
        label = f"trial {ctx.iteration}"
        try:
            stopper = for_incumbent(self.early_stop, ctx.run_dir, ctx.incumbent)
            on_tail = None
            if line is not None or stopper is not None:
                def on_tail(tail: str, elapsed: float) -> None:
                    progress = parse_progress(tail, elapsed_s=elapsed, timeout_s=self.timeout_s)
                    if line is not None:
                        line.update(label, progress)
                    reason = stopper.check(progress) if stopper is not None else None
                    if reason:
                        raise StoppedEarly(reason)  # run_command kills the trial's process group
            started = time.monotonic()
            code, timed_out, seconds = run_command(self.command, cwd=workdir, log_path=log_path,
                                                   timeout_s=self.timeout_s, env=env, on_tail=on_tail)
        except StoppedEarly as stop:
            return ExecutionResult(status="fail", artifact=str(artifact.relative_to(ctx.run_dir)),
                                   log_tail=read_tail(log_path), duration_s=time.monotonic() - started,
                                   detail={"error": str(stop), "stopped_early": True})
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
