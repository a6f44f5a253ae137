"""Disk faults: the run directory fills up or turns read-only mid-run.

Tests run as root, where ``chmod`` does not stop writes, and nothing can be mounted, so the faults
are made two ways: in this process, journal writes fail (``ENOSPC`` after writing half the line,
``EROFS``, ``EIO`` on fsync) through patched ``open``/``os.write``; in a CLI subprocess, the kernel's
file-size limit (``RLIMIT_FSIZE``, with ``SIGXFSZ`` ignored) makes a write stop part-way with
``EFBIG``, exactly where a full disk would. Either way: a clear one-line error, no corrupt journal,
and ``resume`` finishes the run once the disk is back, with no trial lost and none run twice.
"""

from __future__ import annotations

import builtins
import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.errors import RunDirError
from domains.train_opt.session import TrainSession, make_settings
from tests.reliability.conftest import cli_env, executions, journal_sound, ran, run_cli, trials

INNER, CYCLES = 3, 2
TOTAL = 1 + INNER * CYCLES


class FailingJournal:
    """Makes writes to ``journal.jsonl`` fail from the ``after``-th one on (``times`` of them):
    ``partial`` writes half the bytes first, as a full disk does; ``fsync`` fails the flush instead."""

    def __init__(self, *, after: int, code: int, times: int = 1, partial: bool = False,
                 on_fsync: bool = False) -> None:
        monkeypatch = pytest.MonkeyPatch()  # its own, so `undo` restores only the disk
        self.after, self.code, self.times, self.partial, self.on_fsync = after, code, times, partial, on_fsync
        self.writes = 0
        self.failed = 0
        self.fds: set[int] = set()
        real_open, real_os_open, real_write, real_fsync = builtins.open, os.open, os.write, os.fsync

        def is_journal(path) -> bool:
            return isinstance(path, (str, os.PathLike)) and os.fspath(path).endswith("journal.jsonl")

        def fail(fd: int, data: bytes) -> int:
            self.writes += 1
            if self.writes >= self.after and self.failed < self.times and not self.on_fsync:
                self.failed += 1
                if self.partial:
                    real_write(fd, bytes(data)[: len(data) // 2])
                raise OSError(self.code, os.strerror(self.code))
            return real_write(fd, data)

        class Handle:
            def __init__(self, fh) -> None:
                self._fh = fh

            def write(self, data: bytes) -> int:
                return fail(self._fh.fileno(), data)

            def __getattr__(self, name: str):
                return getattr(self._fh, name)

            def __enter__(self):
                return self

            def __exit__(self, *exc) -> None:
                self._fh.close()

        def patched_open(file, mode="r", *args, **kwargs):
            fh = real_open(file, mode, *args, **kwargs)
            return Handle(fh) if is_journal(file) and ("a" in mode or "w" in mode) else fh

        def patched_os_open(path, flags, *args, **kwargs):
            fd = real_os_open(path, flags, *args, **kwargs)
            if is_journal(path):
                self.fds.add(fd)
            return fd

        def patched_write(fd: int, data) -> int:
            return fail(fd, data) if fd in self.fds else real_write(fd, data)

        def patched_fsync(fd) -> None:
            fileno = fd if isinstance(fd, int) else fd.fileno()
            journal_fd = fileno in self.fds or os.path.realpath(f"/proc/self/fd/{fileno}").endswith("journal.jsonl")
            if self.on_fsync and journal_fd and self.writes >= self.after and self.failed < self.times:
                self.failed += 1
                raise OSError(self.code, os.strerror(self.code))
            return real_fsync(fd)

        monkeypatch.setattr(builtins, "open", patched_open)
        monkeypatch.setattr(os, "open", patched_os_open)
        monkeypatch.setattr(os, "write", patched_write)
        monkeypatch.setattr(os, "fsync", patched_fsync)
        self.undo = monkeypatch.undo


def settings(standin: Path):
    return make_settings(target_dir=str(standin), inner_budget=INNER, outer_cycles=CYCLES)


def start_and_run(standin: Path, run_dir: Path) -> None:
    session = TrainSession.start(settings(standin), run_dir)
    try:
        session.run()
    finally:
        session.close()


def resume_to_the_end(run_dir: Path) -> dict:
    session = TrainSession.resume(run_dir)
    try:
        return session.run()
    finally:
        session.close()


@pytest.mark.parametrize(("case", "code", "partial", "on_fsync", "after"), [
    ("disk-full-half-a-line-at-level-2", errno.ENOSPC, True, False, 6),
    ("disk-full-half-a-line-mid-cycle", errno.ENOSPC, True, False, 14),
    ("read-only", errno.EROFS, False, False, 11),
    ("io-error-on-fsync", errno.EIO, False, True, 6),
])
def test_a_journal_write_failure_stops_the_run_with_a_clear_error_and_resume_finishes(
        standin: Path, plan, tmp_path: Path, case, code, partial, on_fsync, after):
    run_dir = tmp_path / "run"
    fault = FailingJournal(after=after, code=code, times=1, partial=partial, on_fsync=on_fsync)
    with pytest.raises(RunDirError) as info:
        start_and_run(standin, run_dir)
    fault.undo()  # the disk is back
    message = str(info.value)
    assert "\n" not in message and "cannot write journal" in message and os.strerror(code) in message
    assert "resume" in message
    before = trials(journal_sound(run_dir))  # every line parses: nothing torn, nothing glued
    summary = resume_to_the_end(run_dir)
    assert summary["complete"]
    after_records = trials(journal_sound(run_dir))
    assert len(after_records) == TOTAL
    assert [r.model_dump(mode="json") for r in after_records[: len(before)]] == \
           [r.model_dump(mode="json") for r in before], "a journaled trial changed on resume"
    rerun = len(executions(plan.ledger)) - len(ran(after_records))
    assert rerun in (0, 1), "a finished trial was run again"
    if rerun:  # only the trial whose record could not be written, from the candidate journaled before it
        pending = [e for e in journal_sound(run_dir) if e["type"] == "proposal" and e["loop"] == "inner"
                   and e["iteration"] == len(before)]
        assert len(pending) == 2 and pending[0]["proposal"] == pending[1]["proposal"]


def test_a_transient_write_failure_never_glues_two_journal_lines(tmp_path: Path):
    """ENOSPC after half a line, then space is back: the next event must start on its own line."""
    from core.state import Journal

    journal = Journal(tmp_path / "journal.jsonl", fsync=True)
    journal.append({"type": "a"})
    fault = FailingJournal(after=1, code=errno.ENOSPC, times=1, partial=True)
    with pytest.raises(RunDirError):
        journal.append({"type": "b", "payload": "x" * 200})
    journal.append({"type": "c"})
    fault.undo()
    journal.append({"type": "d"})
    reread = Journal(tmp_path / "journal.jsonl")
    assert [e["type"] for e in reread.events()] == ["a", "c", "d"]
    assert [e["seq"] for e in reread.events()] == [0, 1, 2]


FSIZE_RUNNER = """
import resource, runpy, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
limit = int(sys.argv.pop(1))
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
sys.argv[0] = "domains.train_opt.cli"
runpy.run_module("domains.train_opt.cli", run_name="__main__")
"""


@pytest.mark.parametrize("limit", [11_000])
def test_a_full_disk_under_the_cli_is_a_one_line_error_and_resume_finishes(
        standin: Path, tmp_path: Path, limit: int):
    """The kernel stops the journal part-way through a line (RLIMIT_FSIZE), as a full disk does."""
    run_dir, ledger = tmp_path / "run", tmp_path / "ledger.txt"
    env = cli_env(STANDIN_LEDGER=str(ledger))
    args = ["--target-dir", standin, "--run-dir", run_dir, "bilevel", "--inner-budget", INNER,
            "--outer-cycles", CYCLES]
    full = subprocess.run([sys.executable, "-c", FSIZE_RUNNER, str(limit), *map(str, args)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert full.returncode == 2, (full.stdout[-2000:], full.stderr[-2000:])
    lines = [line for line in full.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: cannot write journal") and "File too large" in lines[0]
    assert (run_dir / "journal.jsonl").stat().st_size <= limit
    before = trials(journal_sound(run_dir))
    done = run_cli("resume", run_dir, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    records = trials(journal_sound(run_dir))
    assert len(records) == TOTAL and records[: len(before)] == before
    started = executions(ledger)
    assert len(started) - len(ran(records)) <= 1, "more than the trial in flight at the failure ran twice"
