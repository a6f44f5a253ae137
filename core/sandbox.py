"""The OS-level sandbox every worker of generated code runs in.

Generated code (a Level-2 mechanism, an article stage) never runs in the controller's process: it
runs in a worker (:mod:`core._worker`) that the controller starts through :func:`worker_command`.
The boundary is the process and the kernel, in layers; each is applied where the machine allows it
and reported by :func:`probe` (and in every ``mechanism_loaded`` journal event), never assumed:

=============  ====================================================================================
layer          what it does
=============  ====================================================================================
environment    the worker's environment is built from scratch (no API key, no ``PYTHONPATH``);
               ``python -I -B`` (isolated mode: no user site, no environment variables, no cwd on
               ``sys.path``, no bytecode written); cwd is a fresh, empty temporary folder.
namespaces     ``unshare`` (util-linux): user (root mapped), network (no interface but a down
               loopback: every connect fails), IPC, PID (the worker is PID 1 of its own namespace
               and sees no other process) and mount (a private ``/proc``). Skipped when the kernel
               refuses unprivileged namespaces.
rlimits        address space, CPU seconds, file size, open files, no core dumps (set by the worker
               itself before any generated code runs; ``preexec_fn`` is unsafe in a threaded
               controller).
landlock       the kernel's path-based access control (``ctypes`` over the raw syscalls, ABI >= 1):
               read-only access to the Python installation and the few project packages the kind
               needs, read-write access to the worker's own temporary folder, nothing else (no
               project root, so no ``.env``; no run directory; no ``/proc``). From ABI 4 TCP bind
               and connect are refused too; from ABI 6 signals to processes outside the sandbox.
seccomp        a BPF filter (``prctl``; x86_64 and aarch64) refusing new processes (fork, vfork,
               execve, non-thread clone), sockets, signals to any process (kill, tgkill, pidfd,
               sigqueue), ptrace, leaving the process group (setsid, setpgid), file metadata
               (chmod, chown, times, extended attributes, device nodes, handles — Landlock governs
               reads and writes only), files created set-uid or set-gid, namespaces, mounts, keys,
               bpf, io_uring. Threads still work. (A deny list: an allow list would be tighter.)
=============  ====================================================================================

What the layers do **not** promise: the disk is not quota'd (``RLIMIT_FSIZE`` caps each file, not
their number, so a worker can fill the temporary file system while it lives; its folder is removed on
revert); the worker may use up to its CPU and memory limits while it is alive (a mechanism that spins a thread between hook calls costs CPU until its CPU-second limit kills
it); without Landlock (old kernels) it can read files the controller's user can read, except that it
is started from an empty folder with no secret in its environment; without user namespaces it shares
the network stack, and only seccomp refuses sockets. Timeouts are enforced from outside by killing
the worker's process group (see :mod:`core.host`), never by the worker.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import logging
import os
import platform
import shutil
import struct
import subprocess
import sys
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

UNSHARE_FLAGS = ("--user", "--map-root-user", "--net", "--ipc", "--pid", "--fork", "--mount-proc", "--kill-child")


@dataclass(frozen=True)
class Limits:
    """Resource limits of one worker. ``cpu_s`` counts the worker's whole life, not one call."""

    memory_bytes: int = 2 * 1024**3
    cpu_s: int = 600
    file_bytes: int = 16 * 1024**2
    open_files: int = 64


@dataclass(frozen=True)
class SandboxSpec:
    """What a worker may read (besides the Python installation) and where it may write."""

    read_dirs: tuple[str, ...] = ()
    write_dir: str = ""
    limits: Limits = field(default_factory=Limits)


# -- controller side -------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def namespaces_available() -> bool:
    """True when ``unshare`` can give a worker its own user, network, IPC, PID and mount namespaces."""
    unshare = shutil.which("unshare")
    if unshare is None or not sys.platform.startswith("linux"):
        return False
    try:
        proc = subprocess.run([unshare, *UNSHARE_FLAGS, "true"], capture_output=True, timeout=10,
                              env={"PATH": os.defpath})
    except (OSError, subprocess.SubprocessError):
        return False
    if proc.returncode != 0:
        log.warning("namespaces unavailable for sandboxed workers: %s", proc.stderr.decode(errors="replace").strip())
    return proc.returncode == 0


def worker_environment(home: str) -> dict[str, str]:
    """The worker's whole environment: built from scratch, so no API key or token can leak in."""
    return {"PATH": os.defpath, "HOME": home, "LANG": "C.UTF-8", "PYTHONHASHSEED": "0",
            "PYTHONDONTWRITEBYTECODE": "1"}


def worker_command(python_args: list[str], *, namespaces: bool | None = None) -> list[str]:
    """``python -I -B <python_args>``, wrapped in ``unshare`` when namespaces are available."""
    command = [sys.executable, "-I", "-B", *python_args]
    use_ns = namespaces_available() if namespaces is None else namespaces
    if use_ns:
        unshare = shutil.which("unshare")
        if unshare:
            return [unshare, *UNSHARE_FLAGS, *command]
    return command


# -- worker side: applied by the worker to itself, before any generated code is imported -------------


def apply(spec: SandboxSpec) -> dict[str, str]:
    """Apply rlimits, Landlock and seccomp to this process; return each layer's state for the report."""
    report = {"rlimits": _apply_rlimits(spec.limits)}
    report["landlock"] = _apply_landlock(spec)
    report["seccomp"] = _apply_seccomp()
    return report


def _apply_rlimits(limits: Limits) -> str:
    try:
        import resource
    except ImportError:
        return "unavailable: not POSIX"
    wanted = ((resource.RLIMIT_AS, limits.memory_bytes), (resource.RLIMIT_CPU, limits.cpu_s),
              (resource.RLIMIT_FSIZE, limits.file_bytes), (resource.RLIMIT_NOFILE, limits.open_files),
              (resource.RLIMIT_CORE, 0))
    failed = []
    for which, value in wanted:
        try:
            resource.setrlimit(which, (value, value))
        except (ValueError, OSError):
            failed.append(str(which))
    return "on" if not failed else f"partial: could not set {', '.join(failed)}"


_libc = None


def _c() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2


def _no_new_privs() -> None:
    if _c().prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")


# Landlock (include/uapi/linux/landlock.h); the syscall numbers are the same on x86_64 and aarch64.
SYS_LANDLOCK_CREATE_RULESET, SYS_LANDLOCK_ADD_RULE, SYS_LANDLOCK_RESTRICT_SELF = 444, 445, 446
LANDLOCK_CREATE_RULESET_VERSION = 1
LANDLOCK_RULE_PATH_BENEATH = 1
FS_EXECUTE, FS_WRITE_FILE, FS_READ_FILE, FS_READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
FS_ALL_V1 = (1 << 13) - 1
FS_REFER, FS_TRUNCATE, FS_IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
NET_BIND_TCP, NET_CONNECT_TCP = 1 << 0, 1 << 1
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1


def landlock_abi() -> int:
    if not sys.platform.startswith("linux"):
        return 0
    abi = _c().syscall(SYS_LANDLOCK_CREATE_RULESET, None, 0, LANDLOCK_CREATE_RULESET_VERSION)
    return abi if abi > 0 else 0


def python_read_dirs() -> list[str]:
    """Folders the interpreter needs at run time: its installation, the venv, shared libraries."""
    dirs = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
            os.path.dirname(os.path.realpath(sys.executable)), "/usr/lib", "/usr/lib64", "/lib", "/lib64"}
    for entry in sys.path:
        if entry and "site-packages" in entry:
            dirs.add(entry)
    return sorted(d for d in dirs if os.path.isdir(d))


def _apply_landlock(spec: SandboxSpec) -> str:
    abi = landlock_abi()
    if abi == 0:
        return "unavailable: the kernel has no Landlock"
    fs = FS_ALL_V1 | (FS_REFER if abi >= 2 else 0) | (FS_TRUNCATE if abi >= 3 else 0) | (FS_IOCTL_DEV if abi >= 5 else 0)
    net = (NET_BIND_TCP | NET_CONNECT_TCP) if abi >= 4 else 0
    scoped = (SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL) if abi >= 6 else 0
    attr = struct.pack("QQQ", fs, net, scoped)[: 8 if abi < 4 else 16 if abi < 6 else 24]
    buf = ctypes.create_string_buffer(attr, len(attr))
    ruleset = _c().syscall(SYS_LANDLOCK_CREATE_RULESET, buf, len(attr), 0)
    if ruleset < 0:
        return f"unavailable: landlock_create_ruleset failed ({errno.errorcode.get(ctypes.get_errno(), '?')})"
    try:
        read = FS_EXECUTE | FS_READ_FILE | FS_READ_DIR
        rules = [(d, read) for d in (*python_read_dirs(), *spec.read_dirs)]
        if spec.write_dir:
            rules.append((spec.write_dir, fs & ~(FS_IOCTL_DEV | FS_EXECUTE)))
        for path, access in rules:
            _landlock_allow(ruleset, path, access)
        _no_new_privs()
        if _c().syscall(SYS_LANDLOCK_RESTRICT_SELF, ruleset, 0) != 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")
    finally:
        os.close(ruleset)
    parts = ["filesystem"] + (["tcp"] if net else []) + (["signals"] if scoped else [])
    return f"on (ABI {abi}: {', '.join(parts)})"


def _landlock_allow(ruleset: int, path: str, access: int) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC | os.O_DIRECTORY)
    except OSError:
        return  # a folder that does not exist needs no rule
    try:
        attr = struct.pack("=Qi", access, fd)
        buf = ctypes.create_string_buffer(attr, len(attr))
        if _c().syscall(SYS_LANDLOCK_ADD_RULE, ruleset, LANDLOCK_RULE_PATH_BENEATH, buf, 0) != 0:
            raise OSError(ctypes.get_errno(), f"landlock_add_rule({path}) failed")
    finally:
        os.close(fd)


# seccomp: refused system calls by architecture (numbers from the kernel's syscall tables).
_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
_DENIED = {
    "x86_64": {
        # sockets, new processes and programs, other processes
        "socket": 41, "connect": 42, "accept": 43, "bind": 49, "listen": 50, "socketpair": 53, "accept4": 288,
        "fork": 57, "vfork": 58, "execve": 59, "execveat": 322, "kill": 62, "tkill": 200, "tgkill": 234,
        "rt_sigqueueinfo": 129, "rt_tgsigqueueinfo": 297, "pidfd_open": 434, "pidfd_send_signal": 424,
        "pidfd_getfd": 438, "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311,
        "setpgid": 109, "setsid": 112,
        # file metadata (Landlock governs reads and writes, not modes, owners, times or attributes)
        "chmod": 90, "fchmod": 91, "fchmodat": 268, "fchmodat2": 452, "chown": 92, "fchown": 93, "lchown": 94,
        "fchownat": 260, "setxattr": 188, "lsetxattr": 189, "fsetxattr": 190, "removexattr": 197,
        "lremovexattr": 198, "fremovexattr": 199, "utime": 132, "utimes": 235, "futimesat": 261,
        "utimensat": 280, "mknod": 133, "mknodat": 259, "name_to_handle_at": 303, "open_by_handle_at": 304,
        # the kernel's own machinery
        "chroot": 161, "mount": 165, "umount2": 166, "pivot_root": 155, "unshare": 272, "setns": 308,
        "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
        "keyctl": 250, "add_key": 248, "request_key": 249, "bpf": 321, "perf_event_open": 298,
        "userfaultfd": 323, "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
    },
    "aarch64": {
        "socket": 198, "socketpair": 199, "bind": 200, "listen": 201, "accept": 202, "connect": 203,
        "accept4": 242, "execve": 221, "execveat": 281, "kill": 129, "tkill": 130, "tgkill": 131,
        "rt_sigqueueinfo": 138, "rt_tgsigqueueinfo": 240, "pidfd_open": 434, "pidfd_send_signal": 424,
        "pidfd_getfd": 438, "ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271,
        "setpgid": 154, "setsid": 157,
        "fchmod": 52, "fchmodat": 53, "fchmodat2": 452, "fchownat": 54, "fchown": 55, "setxattr": 5,
        "lsetxattr": 6, "fsetxattr": 7, "removexattr": 14, "lremovexattr": 15, "fremovexattr": 16,
        "utimensat": 88, "mknodat": 33, "name_to_handle_at": 264, "open_by_handle_at": 265,
        "chroot": 51, "mount": 40, "umount2": 39, "pivot_root": 41, "unshare": 97, "setns": 268,
        "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
        "keyctl": 219, "add_key": 217, "request_key": 218, "bpf": 280, "perf_event_open": 241,
        "userfaultfd": 282, "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
    },
}
# Calls that create files, with the index of their mode argument: refused with a set-uid/set-gid bit.
_MODE_ARG = {"x86_64": {"open": (2, 2), "creat": (85, 1), "openat": (257, 3), "mkdir": (83, 1), "mkdirat": (258, 2)},
             "aarch64": {"openat": (56, 3), "mkdirat": (34, 2)}}
S_ISUID_ISGID = 0o6000
_CLONE = {"x86_64": 56, "aarch64": 220}
_CLONE3 = 435
CLONE_THREAD = 0x00010000
RET_ALLOW = 0x7FFF0000
RET_ERRNO = 0x00050000
BPF_LD_W_ABS, BPF_JEQ_K, BPF_JSET_K, BPF_JGE_K, BPF_RET_K = 0x20, 0x15, 0x45, 0x35, 0x06


def seccomp_program(machine: str) -> list[tuple[int, int, int, int]]:
    """The BPF filter as ``(code, jt, jf, k)`` rows for ``machine`` (``platform.machine()``)."""
    denied = sorted(_DENIED[machine].values())
    eperm = RET_ERRNO | errno.EPERM
    prog: list[tuple[int, int, int, int]] = [
        (BPF_LD_W_ABS, 0, 0, 4),                      # arch
        (BPF_JEQ_K, 1, 0, _AUDIT_ARCH[machine]),
        (BPF_RET_K, 0, 0, eperm),                     # a foreign ABI: refuse everything
        (BPF_LD_W_ABS, 0, 0, 0),                      # syscall number
    ]
    if machine == "x86_64":                           # the x32 ABI shares the arch value
        prog += [(BPF_JGE_K, 0, 1, 0x40000000), (BPF_RET_K, 0, 0, eperm)]
    prog += [(BPF_JEQ_K, 0, 1, _CLONE3), (BPF_RET_K, 0, 0, RET_ERRNO | errno.ENOSYS)]  # libc falls back to clone
    for nr in denied:
        prog += [(BPF_JEQ_K, 0, 1, nr), (BPF_RET_K, 0, 0, eperm)]
    for nr, arg in _MODE_ARG[machine].values():  # no set-uid / set-gid file can be created
        prog += [
            (BPF_JEQ_K, 0, 4, nr),
            (BPF_LD_W_ABS, 0, 0, 16 + 8 * arg),       # low half of the mode argument
            (BPF_JSET_K, 0, 1, S_ISUID_ISGID),
            (BPF_RET_K, 0, 0, eperm),
            (BPF_RET_K, 0, 0, RET_ALLOW),
        ]
    prog += [
        (BPF_JEQ_K, 0, 3, _CLONE[machine]),
        (BPF_LD_W_ABS, 0, 0, 16),                     # low half of clone's flags (little-endian)
        (BPF_JSET_K, 1, 0, CLONE_THREAD),             # a thread: allowed
        (BPF_RET_K, 0, 0, eperm),                     # a new process: refused
        (BPF_RET_K, 0, 0, RET_ALLOW),
    ]
    return prog


def _apply_seccomp() -> str:
    machine = platform.machine()
    if not sys.platform.startswith("linux") or machine not in _DENIED:
        return f"unavailable: no filter for {sys.platform}/{machine}"
    rows = seccomp_program(machine)
    filt = b"".join(struct.pack("=HBBI", *row) for row in rows)
    fbuf = ctypes.create_string_buffer(filt, len(filt))
    prog = struct.pack("@HP", len(rows), ctypes.addressof(fbuf))
    pbuf = ctypes.create_string_buffer(prog, len(prog))
    try:
        _no_new_privs()
    except OSError as exc:
        return f"unavailable: {exc}"
    if _c().prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, pbuf, 0, 0) != 0:
        return f"unavailable: prctl(PR_SET_SECCOMP) failed ({errno.errorcode.get(ctypes.get_errno(), '?')})"
    return f"on ({len(_DENIED[machine])} calls refused, non-thread clone refused)"
