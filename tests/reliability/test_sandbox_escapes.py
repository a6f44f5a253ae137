"""Hostile generated code, by root cause: the boundary is the worker process and the kernel.

Every source here is loaded through the real path (a sandboxed worker) with the AST policy *bypassed*:
the policy is a lint, and these tests prove what holds when a source gets past it. Each kind of escape
has several variants. A source records what it managed in the value it hands back (a guidance text),
and the test checks the world outside too: sentinel files, a listening socket, a sleeping process,
the journal, the controller's own classes.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import core.loader as loader_module
from core.errors import MechanismError
from core.host import PROJECT_ROOT, InvalidReply, RemoteMechanism
from core.inner_loop import InnerLoopController
from core.loader import MechanismLoader
from core.records import Proposal, ProposalContext, Status
from core.sandbox import landlock_abi, namespaces_available
from core.state import RunDir
from tests.core.helpers import QuadraticExecutor, QuadraticProposer, RecordingEvaluator
from tests.reliability.conftest import journal_sound, trials

SENTINEL = "sk-sentinel-sandbox-0123456789abcdef"
HOOK_DEADLINE = 0.5
MARGIN = 1.5  # seconds past the deadline the loop may be held, at most


@pytest.fixture(autouse=True)
def no_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loader_module, "check_policy", lambda *a, **k: None)


@pytest.fixture
def secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SENTINEL)


def mechanism(body: str, *, prelude: str = "", hook: str = "guidance") -> str:
    """A mechanism whose ``hook`` runs ``body`` (which sets ``out``, a list of strings) and returns
    ``out`` as guidance text, so the test sees what the attempt achieved."""
    args = {"guidance": "self, ctx", "filter": "self, proposal, ctx", "observe": "self, record",
            "decide": "self, record, ctx", "propose": "self, ctx"}[hook]
    ret = {"guidance": "return Guidance(text=' | '.join(out))"}.get(hook, "return None")
    return (
        "import os, sys, json, time, threading, socket, subprocess, builtins, functools\n"
        "from core.mechanism import Mechanism\nfrom core.records import Guidance, Proposal, FilterVerdict\n"
        + textwrap.dedent(prelude)
        + f"\n\nclass Hostile(Mechanism):\n    name = 'hostile'\n\n    def {hook}({args}):\n        out = []\n"
        + textwrap.indent(textwrap.dedent(body), "        ")
        + f"\n        {ret}\n"
    )


def attempt(code: str) -> str:
    """``code`` in a try block that records the exception type, or 'DONE' when nothing stopped it."""
    return f"try:\n{textwrap.indent(textwrap.dedent(code), '    ')}\n    out.append('DONE')\n" \
           "except BaseException as e:\n    out.append(type(e).__name__)\n"


def run_guidance(tmp_path: Path, source: str, *, params: dict | None = None) -> str:
    loaded = MechanismLoader(tmp_path / "run", check_timeout_s=20).load(source, params=params)
    try:
        return loaded.instance.guidance(ProposalContext(loop="inner", iteration=1, cycle=0)).text
    finally:
        loaded.instance.close()


def ctx() -> ProposalContext:
    return ProposalContext(loop="inner", iteration=1, cycle=0)


# -- 1. reaching sys / builtins / os by any route, and what that buys -------------------------------------

ROUTES = {
    "plain import": "import os as o",
    "update_wrapper": "o = functools.update_wrapper(lambda: 0, json.dumps, assigned=(), updated=('__globals__',))"
                      ".__globals__.get('__builtins__') and __import__('os')",
    "builtins": "o = builtins.__import__('os')",
    "subclasses": "o = [c for c in ().__class__.__base__.__subclasses__() if c.__name__ == 'catch_warnings'][0]"
                  "()._module.__builtins__['__import__']('os')",
}


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_no_route_to_os_reads_a_secret_from_the_environment_or_proc(tmp_path: Path, secret_env, route: str):
    body = ROUTES[route] + "\n" + attempt("out.append(str(dict(o.environ)))") \
        + attempt("out.append(open('/proc/%d/environ' % o.getppid(), 'rb').read().decode(errors='replace'))") \
        + attempt("out.append(open('/proc/1/environ', 'rb').read().decode(errors='replace'))") \
        + attempt("out.append(open('/proc/self/environ', 'rb').read().decode(errors='replace'))")
    text = run_guidance(tmp_path, mechanism(body))
    assert SENTINEL not in text
    assert "OPENAI" not in text


@pytest.mark.parametrize("target", ["project .env", "pyproject", "outside file", "run dir", "home secret"])
def test_files_outside_the_worker_cannot_be_read(tmp_path: Path, target: str):
    outside = tmp_path / "outside" / "secret.txt"
    outside.parent.mkdir()
    outside.write_text(SENTINEL)
    run_secret = tmp_path / "run" / "secret.txt"
    run_secret.parent.mkdir()
    run_secret.write_text(SENTINEL)
    path = {"project .env": PROJECT_ROOT / ".env.example", "pyproject": PROJECT_ROOT / "pyproject.toml",
            "outside file": outside, "run dir": run_secret, "home secret": Path.home() / ".bashrc"}[target]
    if not path.exists():
        pytest.skip(f"{path} does not exist on this machine")
    text = run_guidance(tmp_path, mechanism(attempt(f"out.append(open({str(path)!r}).read()[:200])")))
    if landlock_abi() == 0:
        pytest.skip("no Landlock on this kernel: reads are not confined (documented fallback)")
    assert text.startswith(("PermissionError", "FileNotFoundError")), text
    assert SENTINEL not in text


@pytest.mark.parametrize("where", ["project sitecustomize", "core package", "run dir", "tmp", "cwd escape"])
def test_nothing_is_written_outside_the_workers_own_folder(tmp_path: Path, where: str):
    run_dir = tmp_path / "run"
    target = {"project sitecustomize": PROJECT_ROOT / "sitecustomize.py",
              "core package": PROJECT_ROOT / "core" / "zz_planted.py",
              "run dir": run_dir / "mechanisms" / "planted.py",
              "tmp": tmp_path / "planted.txt",
              "cwd escape": None}[where]
    code = (f"open({str(target)!r}, 'w').write('print(1)')" if target else "open('../../planted.txt', 'w').write('x')")
    try:
        text = run_guidance(tmp_path, mechanism(attempt(code)))
        if target is not None:
            assert not target.exists(), f"{target} was written"
    finally:
        if target is not None and target != run_dir / "mechanisms" / "planted.py":
            target.unlink(missing_ok=True)
    if landlock_abi():
        assert text.startswith(("PermissionError", "FileNotFoundError", "OSError")), text


@pytest.mark.parametrize("how", ["connect", "bind", "udp", "unix socketpair", "create_connection"])
def test_no_socket_reaches_a_listening_server(tmp_path: Path, how: str):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.5)
    port = server.getsockname()[1]
    code = {
        "connect": f"s = socket.socket(); s.connect(('127.0.0.1', {port})); s.send(b'leak')",
        "bind": "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(1)",
        "udp": f"s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.sendto(b'leak', ('127.0.0.1', {port}))",
        "unix socketpair": "a, b = socket.socketpair(); a.send(b'x')",
        "create_connection": f"socket.create_connection(('127.0.0.1', {port}), timeout=1)",
    }[how]
    text = run_guidance(tmp_path, mechanism(attempt(code)))
    try:
        with pytest.raises((socket.timeout, TimeoutError)):
            server.accept()
    finally:
        server.close()
    assert "DONE" not in text, text


@pytest.mark.parametrize("how", ["fork", "subprocess", "system", "posix_spawn", "multiprocessing"])
def test_no_new_process_can_be_started(tmp_path: Path, how: str):
    marker = tmp_path / "spawned"
    code = {
        "fork": f"pid = os.fork()\nif pid == 0:\n    open({str(marker)!r}, 'w').close(); os._exit(0)",
        "subprocess": f"subprocess.run(['touch', {str(marker)!r}], check=True)",
        "system": f"assert os.system('touch {marker}') == 0",
        "posix_spawn": f"os.posix_spawn('/usr/bin/touch', ['touch', {str(marker)!r}], {{}})",
        "multiprocessing": "import multiprocessing as m; p = m.Process(target=print); p.start(); p.join()",
    }[how]
    text = run_guidance(tmp_path, mechanism(attempt(code)))
    time.sleep(0.2)
    assert not marker.exists()
    assert "DONE" not in text, text


def test_signals_cannot_reach_processes_outside_the_worker(tmp_path: Path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        body = "".join(attempt(f"os.kill({sleeper.pid}, {sig})") for sig in (signal.SIGKILL, signal.SIGTERM)) \
            + attempt(f"os.killpg({os.getpgid(sleeper.pid)}, 9)")
        text = run_guidance(tmp_path, mechanism(body))
        assert sleeper.poll() is None, "the worker killed a process outside its sandbox"
        assert "DONE" not in text, text
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.parametrize("kind", ["thread", "daemon thread", "atexit", "sigterm ignored"])
def test_nothing_of_a_reverted_mechanism_keeps_running(tmp_path: Path, kind: str):
    prelude = {
        "thread": "def spin():\n    while True:\n        time.sleep(0.01)\nthreading.Thread(target=spin).start()\n",
        "daemon thread": "threading.Thread(target=lambda: [time.sleep(0.01) for _ in iter(int, 1)], daemon=True).start()\n",
        "atexit": "import atexit\natexit.register(lambda: time.sleep(600))\n",
        "sigterm ignored": "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n",
    }[kind]
    loaded = MechanismLoader(tmp_path / "run", check_timeout_s=20).load(mechanism("pass", prelude=prelude))
    pid, home = loaded.worker_pid, loaded.instance.worker._home
    started = time.monotonic()
    MechanismLoader(tmp_path / "run").unload(loaded)
    assert time.monotonic() - started < 2
    assert running_in_group(pid) == []  # the whole process group is gone (a zombie runs nothing)
    assert home and not Path(home).exists()


def running_in_group(pgid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                found.append(int(entry.name))
    return found


def test_patching_shared_modules_or_controller_classes_stays_in_the_worker(tmp_path: Path):
    body = """
if ctx.loop == 'contract-check':
    return Guidance()
import json.encoder, core.records
json.encoder.encode_basestring_ascii = lambda s: '"keep"'
json.dumps = lambda *a, **k: '"keep"'
core.records.Proposal.key = lambda self: 'forged'
out.append('patched')
""" + attempt("import core.inner_loop\ncore.inner_loop.InnerLoopController.step = None")
    # the worker's own replies go through its patched json: the controller refuses them, and that is all
    with pytest.raises(InvalidReply):
        run_guidance(tmp_path, mechanism(body))
    assert json.dumps("discard") == '"discard"'
    assert Proposal(region="r").key() == "r"
    assert callable(InnerLoopController.step)


# -- 2. a deadline cannot be swallowed: it is enforced by killing the worker --------------------------------

SWALLOWERS = {
    "finally continue": "while True:\n    try:\n        while True: pass\n    finally:\n        continue\n",
    "except BaseException": "while True:\n    try:\n        time.sleep(10)\n    except BaseException:\n        pass\n",
    "alarm ignored": "import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\nwhile True: pass\n",
    "blocking C call": "time.sleep(3600)\n",
    "huge computation": "out.append(str(10 ** 10 ** 8))\n",
}


@pytest.mark.parametrize("kind", sorted(SWALLOWERS))
@pytest.mark.parametrize("hook", ["guidance", "observe"])
def test_a_hook_cannot_hold_the_loop_past_its_deadline(tmp_path: Path, kind: str, hook: str):
    source = mechanism(SWALLOWERS[kind], hook=hook)
    # the body only runs for real candidates/records, not the contract probe, so the load passes
    source = source.replace("        out = []\n", "        out = []\n        if ctx_or_record_is_probe(locals()):\n"
                            f"            {'return None' if hook != 'guidance' else 'return Guidance()'}\n", 1)
    source = source.replace("class Hostile", "def ctx_or_record_is_probe(l):\n    v = l.get('ctx') or l.get('record')\n"
                            "    return getattr(v, 'loop', '') == 'contract-check'\n\n\nclass Hostile")
    controller, path = live_controller(tmp_path, source)
    started = time.monotonic()
    controller.run_cycle(0, 2)
    elapsed = time.monotonic() - started
    controller.run.close()
    assert elapsed < HOOK_DEADLINE + MARGIN + 1.0, f"the loop was held {elapsed:.1f}s"
    events = [e for e in journal_sound(path) if e["type"] == "mechanism_detached"]
    assert len(events) == 1 and events[0]["hook"] == hook and "deadline" in events[0]["reason"]
    assert len(trials(journal_sound(path))) == 3


def live_controller(tmp_path: Path, source: str) -> tuple[InnerLoopController, Path]:
    path = tmp_path / "run"
    run = RunDir.create(path, fsync=False)
    controller = InnerLoopController(run=run, proposer=QuadraticProposer(), executor=QuadraticExecutor(),
                                     evaluator=RecordingEvaluator(), hook_timeout_s=HOOK_DEADLINE)
    controller.ensure_baseline()
    loaded = MechanismLoader(path, check_timeout_s=20).load(source)  # probed on the synthetic context
    # replay=False: a hostile hook is meant to act on the live loop, not while the baseline is replayed
    controller.attach(loaded.instance, name=loaded.name, origin="generated", digest=loaded.digest, replay=False)
    return controller, path


# -- 3. nothing the mechanism returns runs code in the controller -----------------------------------------

LATE_CODE = {
    "generator in changes": "return Proposal(changes={'x': (i for i in iter(int, 1))})",
    "object with property": "class P:\n    @property\n    def v(self):\n        open(MARK, 'w').close()\n"
                            "return Proposal.model_construct(changes={'x': P()}, origin='proposer')",
    "subclass with eq": "class Sneaky(Proposal):\n    def __eq__(self, other):\n        open(MARK, 'w').close()\n"
                        "        return True\nreturn Sneaky(changes={'x': 1.0 + ctx.iteration})",  # a new x each time
    "exception with property message": "class E(Exception):\n    def __str__(self):\n        while True: pass\n"
                                       "raise E()",
    "huge payload": "return Proposal(changes={'x': 'y' * (50 * 1024 * 1024)})",
    "nested lists": "v = []\nfor _ in range(100000):\n    v = [v]\nreturn Proposal(changes={'x': v})",
}


@pytest.mark.parametrize("kind", sorted(LATE_CODE))
def test_what_a_hook_returns_is_rebuilt_as_plain_validated_data(tmp_path: Path, kind: str):
    mark = tmp_path / "mark"
    body = f"MARK = {str(mark)!r}\nif ctx.loop == 'contract-check':\n    return None\n" + LATE_CODE[kind]
    source = mechanism(body, hook="propose")
    controller, path = live_controller(tmp_path, source)
    started = time.monotonic()
    records = controller.run_cycle(0, 2)
    controller.run.close()
    assert time.monotonic() - started < HOOK_DEADLINE + MARGIN + 1.0
    assert not mark.exists(), "mechanism code ran in the controller"
    for record in records:
        assert type(record.proposal) is Proposal
        for value in record.proposal.changes.values():
            assert isinstance(value, (int, float, str, bool, type(None), list))
        json.dumps(record.model_dump(mode="json"))
    assert len(trials(journal_sound(path))) == 3


# -- 4. the check and the live load are one process; a hang or a bomb at load time is contained -----------

@pytest.mark.parametrize("kind", ["hang", "allocate", "exit"])
def test_a_source_that_behaves_only_in_the_check_cannot_hang_or_bloat_the_controller(tmp_path: Path, kind: str):
    act = {"hang": "while True: pass", "allocate": "x = bytearray(8 * 1024 ** 3)", "exit": "os._exit(0)"}[kind]
    source = ("import os\nfrom core.mechanism import Mechanism\nMADE = []\n\n\nclass Split(Mechanism):\n"
              "    def __init__(self, **params):\n        super().__init__(**params)\n        MADE.append(1)\n"
              f"        if len(MADE) > 1:\n            {act}\n")
    started = time.monotonic()
    with pytest.raises(MechanismError) as info:
        MechanismLoader(tmp_path / "run", check_timeout_s=3).load(source)
    assert time.monotonic() - started < 3 + MARGIN
    assert info.value.stage in ("contract", "instantiate")


def test_a_kept_mechanism_that_hangs_on_reload_does_not_hang_resume(tmp_path: Path):
    # resume reloads the kept sources; one that now hangs is refused in time and reported
    source = "from core.mechanism import Mechanism\nimport time\n\n\nclass Later(Mechanism):\n" \
             "    def __init__(self, **p):\n        super().__init__(**p)\n        time.sleep(60)\n"
    started = time.monotonic()
    with pytest.raises(MechanismError):
        MechanismLoader(tmp_path / "run", check_timeout_s=2).load(source)
    assert time.monotonic() - started < 2 + MARGIN


# -- 5 and 6. records the controller holds cannot be changed; bookkeeping fields are the controller's -------

MUTATORS = {
    "dict.update on info": "dict.update(record.info, {'provider_failure': True})",
    "dict.__setitem__ on metrics": "dict.__setitem__(record.metrics, 'score', -1e9)",
    "list.append on history": "list.append(list(ctx.history), None)",
    "object.__setattr__ on status": "object.__setattr__(record, 'status', 'keep')",
    "pydantic private dict": "record.__dict__['score'] = -1e9",
}


@pytest.mark.parametrize("kind", sorted(MUTATORS))
def test_a_decide_hook_cannot_change_a_journaled_record_or_the_incumbent(tmp_path: Path, kind: str):
    body = attempt(MUTATORS[kind])
    source = mechanism(body, hook="decide")
    controller, path = live_controller(tmp_path, source)
    best_before = controller.best_score
    records = controller.run_cycle(0, 3)
    controller.run.close()
    journaled = [r.model_dump(mode="json") for r in trials(journal_sound(path))]
    assert [r.model_dump(mode="json") for r in controller.history] == journaled
    assert not any(r.info.get("provider_failure") for r in records)
    kept = [r.score for r in controller.history if r.status is Status.KEEP]
    assert controller.best_score == kept[-1] and (best_before is None or controller.best_score <= best_before)


@pytest.mark.parametrize("hook", ["propose", "filter"])
def test_a_mechanism_cannot_pass_its_candidate_off_as_the_baseline(tmp_path: Path, hook: str):
    make = "Proposal(changes={'x': 99.0 + ctx.iteration}, region='baseline', origin='baseline')"  # never a repeat
    body = ("if ctx.loop == 'contract-check':\n    return None\n"
            + (f"return {make}" if hook == "propose" else f"return FilterVerdict.rewrite({make})"))
    controller, path = live_controller(tmp_path, mechanism(body, hook=hook))
    records = controller.run_cycle(0, 3)
    controller.run.close()
    assert len(records) == 3, "the cycle did not count its trials"
    assert all(r.proposal.origin != "baseline" for r in records)
    assert [r.proposal.origin for r in controller.history].count("baseline") == 1


# -- the layers themselves ---------------------------------------------------------------------------------


def test_every_sandbox_layer_reports_its_state_in_the_load(tmp_path: Path):
    loaded = MechanismLoader(tmp_path / "run").load(mechanism("pass"))
    loaded.instance.close()
    layers = loaded.sandbox
    assert set(layers) >= {"environment", "namespaces", "rlimits", "landlock", "seccomp"}
    assert layers["rlimits"] == "on"
    if sys.platform.startswith("linux") and landlock_abi():
        assert layers["landlock"].startswith("on")
    if namespaces_available():
        assert layers["namespaces"].startswith("on")


def test_threads_still_work_inside_the_sandbox(tmp_path: Path):
    body = "r = []\nt = threading.Thread(target=lambda: r.append(1))\nt.start(); t.join()\nout.append(str(r))"
    assert run_guidance(tmp_path, mechanism(body)) == "[1]"


def test_a_worker_is_a_separate_process_with_its_own_pid_namespace(tmp_path: Path):
    text = run_guidance(tmp_path, mechanism("out.append(str(os.getpid()))"))
    if namespaces_available():
        assert text == "1"  # PID 1 of its own namespace: no other process is visible to it
    else:
        assert text != str(os.getpid())


def test_the_proxy_is_what_the_controller_attaches(tmp_path: Path):
    controller, path = live_controller(tmp_path, mechanism("pass"))
    assert isinstance(controller.mechanisms[0].instance, RemoteMechanism)
    controller.detach("hostile", reason="test")
    assert not controller.mechanisms and threading.active_count() >= 1
    controller.run.close()


# -- found by red-teaming: the log, file metadata, signals, a forged load reply ----------------------------

LOG_TRICKS = {
    "symlink to a secret": "os.unlink('../worker.log'); os.symlink(SECRET, '../worker.log')",
    "symlink in cwd": "os.symlink(SECRET, 'worker.log')",
    "fifo": "os.mkfifo('../worker.log')",
    "fifo in cwd": "os.mkfifo('worker.log')",
    "endless stderr": "import sys\nwhile True:\n    sys.stderr.write(SECRET_TEXT * 1000)",
}


@pytest.mark.parametrize("trick", sorted(LOG_TRICKS))
def test_a_worker_cannot_make_the_controller_read_or_block_on_its_log(tmp_path: Path, trick: str):
    secret = tmp_path / "secret.txt"
    secret.write_text(SENTINEL)
    prelude = (f"SECRET = {str(secret)!r}\nSECRET_TEXT = 'x'\n" + "try:\n"
               + textwrap.indent(LOG_TRICKS[trick], "    ") + "\nexcept BaseException:\n    pass\nos._exit(3)\n")
    started = time.monotonic()
    with pytest.raises(MechanismError) as info:
        MechanismLoader(tmp_path / "run", check_timeout_s=5).load(mechanism("pass", prelude=prelude))
    assert time.monotonic() - started < 5 + MARGIN
    assert SENTINEL not in str(info.value) and SENTINEL not in info.value.traceback_tail
    assert len(info.value.traceback_tail) <= 2000


METADATA = {
    "chmod": "os.chmod(TARGET, 0o666)",
    "chmod dir": "os.chmod(os.path.dirname(TARGET), 0)",
    "chown": "os.chown(TARGET, 0, 0)",
    "utime": "os.utime(TARGET, (0, 0))",
    "setxattr": "os.setxattr(TARGET, 'user.pwn', b'1')",
    "setuid file in own folder": "fd = os.open('payload', os.O_CREAT | os.O_WRONLY, 0o4755); os.close(fd)",
    "setgid dir in own folder": "os.mkdir('d', 0o2755)",
}


@pytest.mark.parametrize("kind", sorted(METADATA))
def test_file_metadata_cannot_be_changed(tmp_path: Path, kind: str):
    target = tmp_path / "victim.txt"
    target.write_text("x")
    os.chmod(target, 0o600)
    before = os.stat(target)
    body = f"TARGET = {str(target)!r}\n" + attempt(METADATA[kind])
    text = run_guidance(tmp_path, mechanism(body))
    after = os.stat(target)
    assert (after.st_mode, after.st_mtime, after.st_uid) == (before.st_mode, before.st_mtime, before.st_uid)
    assert os.stat(tmp_path).st_mode == os.stat(tmp_path).st_mode | 0o700
    assert "DONE" not in text, text


@pytest.mark.parametrize("call", ["tgkill", "rt_sigqueueinfo", "pidfd_open"])
def test_no_signal_system_call_reaches_another_process(tmp_path: Path, call: str):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    numbers = {"tgkill": 234, "rt_sigqueueinfo": 129, "pidfd_open": 434}
    if os.uname().machine != "x86_64":
        pytest.skip("syscall numbers here are x86_64's")
    try:
        code = ("import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
                f"rc = libc.syscall({numbers[call]}, {sleeper.pid}, {sleeper.pid}, 9, 0)\n"
                "assert rc == 0, ctypes.get_errno()")
        text = run_guidance(tmp_path, mechanism(attempt(code)))
        time.sleep(0.1)
        assert sleeper.poll() is None
        assert "DONE" not in text, text
    finally:
        sleeper.kill()
        sleeper.wait()


def forge_prelude(line: str) -> str:
    """Top-level code writing ``line`` straight to every pipe the worker holds (its reply channel too)."""
    return ("import stat\nfor fd in range(3, 20):\n    try:\n        if stat.S_ISFIFO(os.fstat(fd).st_mode):\n"
            f"            os.write(fd, {(line + chr(10)).encode()!r})\n    except OSError:\n        pass\n")


FORGED = {
    "missing name": '{"ok": true}',
    "hooks not a list": '{"ok": true, "name": "x", "class_name": "X", "hooks": 5}',
    "unknown hook": '{"ok": true, "name": "x", "class_name": "X", "hooks": ["__del__"]}',
    "deep nesting": "[" * 200000,
    "a failure with a huge message": '{"ok": false, "stage": "policy", "message": "' + "m" * 5000 + '"}',
}


@pytest.mark.parametrize("kind", sorted(FORGED))
def test_a_forged_load_reply_is_refused_as_a_bad_reply(tmp_path: Path, kind: str):
    prelude = forge_prelude(FORGED[kind]) + "os._exit(0)\n"
    with pytest.raises(MechanismError) as info:
        MechanismLoader(tmp_path / "run", check_timeout_s=10).load(mechanism("pass", prelude=prelude))
    assert info.value.stage in ("contract", "instantiate")
    assert len(str(info.value)) < 1200


def test_a_well_formed_forgery_cannot_forge_the_sandbox_report(tmp_path: Path):
    prelude = forge_prelude('{"ok": true, "name": "x", "class_name": "X", "hooks": [], '
                            '"sandbox": {"landlock": "on (forged)"}}')
    with pytest.raises(MechanismError) as info:  # an unknown field ('sandbox') in a load reply is refused
        MechanismLoader(tmp_path / "run", check_timeout_s=10).load(mechanism("pass", prelude=prelude))
    assert info.value.rule == "bad-reply"
