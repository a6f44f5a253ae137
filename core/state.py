"""Run directories and the append-only journal every level writes to.

A run's state is never stored in place: each operation appends one JSON line to ``journal.jsonl``
(file lock, ``fsync``), and the state is rebuilt by replaying it. An append that fails part-way (a
full disk) is cut back, so the file only ever holds whole lines. A torn last line (the process
died mid-write) is tolerated and trimmed; a damaged line in the middle is an error, since silently
skipping it could lose a finished trial. Any other file is written atomically (temp file + rename).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import secrets
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from core.errors import JournalCorruptError, RunDirError
from core.events import EventError, check_event

log = logging.getLogger(__name__)

JOURNAL_NAME = "journal.jsonl"
LOCK_NAME = ".lock"
DEFAULT_RUNS_ROOT = Path("runs")


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so a reader sees the old file or the new one, never a mix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


class Journal:
    """Append-only JSON-lines journal.

    Each event is a dict with at least ``type``; the journal adds ``seq`` (0-based, dense) and
    ``ts`` (UTC ISO time). A run's journal is ``typed``: an event whose type has a model in
    :mod:`core.events` is validated against it when appended and when the journal is loaded (a bare
    journal stores any JSON object). Replay with :meth:`events`.
    """

    def __init__(self, path: Path, *, fsync: bool = True, typed: bool = False) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self.typed = typed
        self._torn_at: int | None = None  # where a failed append's fragment starts, if not cut yet
        self._events: list[dict[str, Any]] = self._load()

    # -- reading ----------------------------------------------------------------------------------
    def _load(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        try:
            raw = self.path.read_bytes()
        except OSError as exc:
            raise RunDirError(f"cannot read journal {self.path}: {exc.strerror}; check its permissions") from exc
        lines = raw.split(b"\n")
        events: list[dict[str, Any]] = []
        good_bytes = 0
        trimmed = False
        for index, line in enumerate(lines):
            if not line.strip():
                good_bytes += len(line) + 1
                continue
            try:
                event = json.loads(line)
                if not isinstance(event, dict):
                    raise ValueError("not an object")
            except ValueError as exc:
                # only a damaged line pays for this scan (slicing per line made every load quadratic)
                is_last = all(not rest.strip() for rest in lines[index + 1 :])
                if is_last:
                    log.warning("journal %s: dropping torn last line (%d bytes)", self.path, len(line))
                    self._truncate(good_bytes)
                    trimmed = True
                    break
                raise JournalCorruptError(
                    f"journal {self.path} line {index + 1} is not valid JSON ({exc}); the file is damaged "
                    "in the middle: restore it from a backup or start a new --run-dir"
                ) from exc
            try:
                if self.typed:
                    check_event(event)
            except EventError as exc:
                raise JournalCorruptError(f"journal {self.path} line {index + 1}: {exc}; the file was edited or "
                                          "written by another version: restore it or start a new --run-dir") from None
            events.append(event)
            good_bytes += len(line) + 1
        if raw and not raw.endswith(b"\n") and events and not trimmed:
            # the last event is whole but its newline never hit the disk: restore it, or the next
            # append would be glued onto it and both would be lost as one torn line
            self._repair_newline()
        return events

    def _repair_newline(self) -> None:
        try:
            with open(self.path, "ab") as fh:
                fh.write(b"\n")
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            log.warning("journal %s: could not restore the last newline: %s", self.path, exc)

    def _truncate(self, size: int) -> None:
        try:
            with open(self.path, "r+b") as fh:
                fh.truncate(size)
        except OSError as exc:  # read-only: keep going; the torn line is ignored in memory anyway
            log.warning("journal %s: could not trim torn line: %s", self.path, exc)

    def events(self, type: str | None = None, **match: Any) -> Iterator[dict[str, Any]]:
        for event in self._events:
            if type is not None and event.get("type") != type:
                continue
            if all(event.get(k) == v for k, v in match.items()):
                yield event

    def last(self, type: str, **match: Any) -> dict[str, Any] | None:
        found = None
        for event in self.events(type, **match):
            found = event
        return found

    def __len__(self) -> int:
        return len(self._events)

    # -- writing ----------------------------------------------------------------------------------
    def append(self, event: dict[str, Any], *, fsync: bool | None = None) -> dict[str, Any]:
        """Append one event. ``fsync=False`` skips the flush to disk for events whose loss on a
        crash is harmless (they are re-derived on resume)."""
        if "type" not in event:
            raise ValueError("journal events need a 'type'")
        if self.typed:
            check_event(event)  # a type with a model in core.events is refused when it does not match it
        full = {"seq": len(self._events), "ts": datetime.now(timezone.utc).isoformat(timespec="milliseconds")}
        full.update(event)
        line = (json.dumps(full, sort_keys=False, default=str, separators=(",", ":")) + "\n").encode()
        try:
            with open(self.path, "ab", buffering=0) as fh:  # unbuffered: no bytes left over to flush later
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
                try:
                    self._write_line(fh, line, self.fsync if fsync is None else (fsync and self.fsync))
                finally:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        except OSError as exc:
            raise RunDirError(
                f"cannot write journal {self.path}: {exc.strerror}; free disk space or fix permissions, "
                "then `resume` the run (nothing already journaled is lost)"
            ) from exc
        self._events.append(full)
        return full

    def _write_line(self, fh: Any, line: bytes, sync: bool) -> None:
        """Write one whole line or nothing: a write that fails part-way (a full disk) is cut off
        again, so the next append cannot glue its line onto the fragment and lose both."""
        fd = fh.fileno()
        if self._torn_at is not None:  # an earlier failure could not cut its fragment: do it first
            os.ftruncate(fd, self._torn_at)
            self._torn_at = None
        start = os.fstat(fd).st_size
        try:
            view = memoryview(line)
            while view:
                view = view[fh.write(view):]
            if sync:
                os.fsync(fd)
        except OSError:
            try:
                os.ftruncate(fd, start)
            except OSError:
                self._torn_at = start
            raise


class RunDir:
    """A run directory: the journal, trial folders, artifacts. Held under an exclusive lock.

    A second process opening the same run directory gets a :class:`RunDirError` instead of
    interleaving journal lines with the first.
    """

    def __init__(self, path: Path, *, fsync: bool = True, lock: bool = True) -> None:
        self.path = Path(path)
        self._lock_fh = None
        if lock:
            self._acquire_lock()
        self.journal = Journal(self.path / JOURNAL_NAME, fsync=fsync, typed=True)

    @classmethod
    def create(cls, path: Path | None = None, *, root: Path = DEFAULT_RUNS_ROOT, prefix: str = "run",
               fsync: bool = True) -> RunDir:
        if path is None:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            path = Path(root) / f"{prefix}-{stamp}-{secrets.token_hex(2)}"
        path = Path(path)
        if (path / JOURNAL_NAME).exists():
            raise RunDirError(f"{path} already holds a run; use `resume {path}` or pick another --run-dir")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunDirError(f"cannot create run directory {path}: {exc.strerror}; choose a writable --run-dir") from exc
        if not os.access(path, os.W_OK):
            raise RunDirError(f"run directory {path} is not writable; choose a writable --run-dir")
        return cls(path, fsync=fsync)

    @staticmethod
    def check(path: Path, *, expect: tuple[str, ...] = ()) -> Path:
        """Raise :class:`RunDirError` unless ``path`` is a folder with a readable journal and the
        files named in ``expect``; nothing is written (no lock, no repair of the journal)."""
        path = Path(path)
        if not path.is_dir():
            raise RunDirError(f"{path} is not a run directory (it does not exist); pass the folder a run printed")
        for name in (JOURNAL_NAME, *expect):
            if not (path / name).is_file():
                raise RunDirError(f"{path} has no {name}; pass the folder a run printed")
        if not os.access(path / JOURNAL_NAME, os.R_OK):
            raise RunDirError(f"cannot read {path / JOURNAL_NAME}; check its permissions")
        return path

    @classmethod
    def open(cls, path: Path, *, fsync: bool = True, expect: tuple[str, ...] = ()) -> RunDir:
        """Reopen a run directory (taking its lock, trimming a torn last journal line); ``expect``
        names files a run of the caller's kind has, checked before anything is touched."""
        return cls(cls.check(path, expect=expect), fsync=fsync)

    def _acquire_lock(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fh = open(self.path / LOCK_NAME, "a+")
        except OSError as exc:
            raise RunDirError(f"cannot use run directory {self.path}: {exc.strerror}; choose a writable --run-dir") from exc
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "?"
            fh.close()
            raise RunDirError(
                f"run directory {self.path} is in use by another process (pid {holder}); "
                "wait for it to finish or use another --run-dir"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._lock_fh = fh

    def close(self) -> None:
        if self._lock_fh is not None:
            try:
                fcntl.flock(self._lock_fh.fileno(), fcntl.LOCK_UN)
            finally:
                self._lock_fh.close()
                self._lock_fh = None

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- files ------------------------------------------------------------------------------------
    def trial_dir(self, loop: str, iteration: int) -> Path:
        path = self.path / "trials" / loop / f"{iteration:05d}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def rel(self, path: Path) -> str:
        return str(Path(path).resolve().relative_to(self.path.resolve()))

    def abs(self, rel: str) -> Path:
        return self.path / rel

    def write_text(self, rel: str, text: str) -> Path:
        target = self.path / rel
        atomic_write_text(target, text)
        return target

    def write_json(self, rel: str, data: Any) -> Path:
        target = self.path / rel
        atomic_write_json(target, data)
        return target

    def read_json(self, rel: str) -> Any:
        return json.loads((self.path / rel).read_text(encoding="utf-8"))
