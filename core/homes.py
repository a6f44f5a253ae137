"""The temporary folders of sandboxed workers: who owns one, and removing those nobody will.

A worker's home is ``$TMPDIR/bilevel-worker-*``: ``work/`` (the worker's cwd, the only folder it can
write), its stderr log and an ``owner`` file the controller writes before any generated code runs —
the controller's and the worker's pid and start time, the PID namespace and the machine (boot id and
host name). The controller removes the home when it reverts the mechanism or exits
(:mod:`core.host`); a controller killed outright cannot, so the next controller on the machine calls
:func:`sweep_stale` once: a home goes only when its owner file is a regular file written on this
machine, in this PID namespace, naming two processes that both no longer run (a zombie does not run;
a reused pid with another start time is not the same process). Anything it cannot vouch for — no
owner file, a link, another user's folder, another machine's or namespace's — is left alone, and a
folder that cannot be removed is logged, never raised: a worker may have filled ``work/`` with a tree
too deep for a recursive removal, and that must not stop the next controller.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import stat
import tempfile

log = logging.getLogger(__name__)

PREFIX = "bilevel-worker-"
OWNER_FILE = "owner"  # in a worker's home, beside (not inside) the folder the worker may write


def started(pid: int) -> str | None:
    """When process ``pid`` started (Linux: clock ticks since boot, from /proc), "" where that cannot
    be read but the process exists, ``None`` when there is no such process or it is a zombie."""
    if pid <= 1:
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
        return None if fields[0] in (b"Z", b"X") else fields[19].decode()
    except (OSError, IndexError):
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except OSError:  # it exists, owned by someone else
        return ""
    return ""


def alive(pid: int, start: str) -> bool:
    """Whether the process that had ``pid`` and start time ``start`` still runs (a reused pid with
    another start time is not it; without a start time, the pid's existence decides)."""
    now = started(pid)
    return now is not None and (not now or not start or now == start)


def _read(path: str) -> str:
    try:
        with open(path, encoding="ascii") as handle:
            return handle.read(100).strip()
    except (OSError, UnicodeDecodeError):
        return ""


def namespace() -> str:
    """This process's PID namespace and machine, "" where either cannot be read: pids recorded in
    another namespace (a container) or on another machine (a shared temporary folder) say nothing
    about processes here."""
    try:
        pid_ns = os.readlink("/proc/self/ns/pid").replace(" ", "")
    except OSError:
        return ""
    boot = _read("/proc/sys/kernel/random/boot_id")
    return f"{pid_ns}@{boot}@{socket.gethostname()}".replace(" ", "") if boot else ""


def write_owner(home: str, owner: int, worker: int) -> None:
    """Record who owns ``home`` (written to a temporary name, then renamed into place)."""
    text = f"{owner} {started(owner) or '-'} {worker} {started(worker) or '-'} {namespace() or '-'}\n"
    tmp = os.path.join(home, OWNER_FILE + ".tmp")
    with open(tmp, "w", encoding="ascii") as handle:
        handle.write(text)
    os.replace(tmp, os.path.join(home, OWNER_FILE))


def _owner(home: str) -> list[str]:
    """The owner file's fields; [] unless it is a regular file (not a link, not a FIFO)."""
    try:
        fd = os.open(os.path.join(home, OWNER_FILE), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return []
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return []
        return os.read(fd, 300).decode("ascii", "replace").split()
    finally:
        os.close(fd)


def remove(path: str) -> bool:
    """Remove a worker's home; a failure is logged, never raised. True when it is gone."""
    try:
        shutil.rmtree(path, ignore_errors=True)
    except (RecursionError, OSError) as exc:  # e.g. a tree deeper than the recursion limit
        log.warning("could not remove the worker folder %s: %s; remove it by hand", path, type(exc).__name__)
    return not os.path.lexists(path)


def sweep_stale(root: str | None = None) -> list[str]:
    """Remove the homes of workers whose controller died without closing them; return those removed.
    Never raises (see the module docstring for what is removed and what is left alone)."""
    try:
        return _sweep(root or tempfile.gettempdir())
    except Exception as exc:  # noqa: BLE001 - cleaning up after others must never stop this run
        log.warning("the sweep of stale worker folders failed: %s", exc)
        return []


def _sweep(root: str) -> list[str]:
    here = namespace()
    if not here:
        return []
    removed = []
    try:
        entries = list(os.scandir(root))
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(PREFIX):
            continue
        try:
            if entry.is_symlink() or not entry.is_dir(follow_symlinks=False) or entry.stat(
                    follow_symlinks=False).st_uid != os.getuid():
                continue
        except OSError:
            continue
        fields = _owner(entry.path)
        try:
            owner, owner_start, worker, worker_start, where = int(fields[0]), fields[1], int(fields[2]), fields[3], fields[4]
        except (ValueError, IndexError):
            continue
        if where != here or owner <= 1 or worker <= 1:
            continue
        if alive(owner, owner_start.strip("-")) or alive(worker, worker_start.strip("-")):
            continue
        if remove(entry.path):
            removed.append(entry.path)
    if removed:
        log.info("removed %d worker folder(s) left by controllers that died", len(removed))
    return removed
