"""A program that forgets its sandboxed workers leaves nothing behind: no worker process, no folder.

A worker is a child process with a private folder under the temporary directory. A run closes its
workers as it goes; these tests cover the program that does not — it exits with a mechanism still
loaded, normally or as a multiprocessing child (which skips ``atexit``) — and the forked child that
inherits its parent's workers, which must never close them.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from core import homes

ROOT = Path(__file__).resolve().parents[2]

LOAD = textwrap.dedent('''
    import os, sys, tempfile
    from pathlib import Path
    from core.loader import MechanismLoader
    from core.mechanisms import render_template

    def load(name="tabu"):
        return MechanismLoader(Path(tempfile.mkdtemp())).load(render_template(name, {}))
''')

EXITS = {
    # the script's tail after LOAD; each leaves loaded mechanisms behind when it ends
    "returns-from-main": "kept = [load(), load('bandit')]\nprint(kept[0].worker_pid, kept[1].worker_pid)",
    "sys-exit": "kept = load()\nprint(kept.worker_pid)\nsys.exit(0)",
    "raises": "kept = load()\nprint(kept.worker_pid, flush=True)\nraise RuntimeError('the program fails')",
    "pool-children": textwrap.dedent('''
        from concurrent.futures import ProcessPoolExecutor

        def work(_):
            global kept
            kept = load()
            return kept.worker_pid

        if __name__ == "__main__":
            with ProcessPoolExecutor(2) as pool:
                print(*pool.map(work, range(4)))
    '''),
}


def _alive(pid: int) -> bool:
    return homes.started(pid) is not None  # a zombie not yet reaped by its (gone) parent is not running


def _program(script: str, tmp: Path) -> tuple[Path, dict[str, str]]:
    """A controller program (LOAD + ``script``) under ``tmp``, and its environment: every program of
    a test shares the temporary folder ``tmp/t``."""
    path = tmp / f"prog-{len(list(tmp.glob('prog-*')))}.py"
    path.write_text(LOAD + script, encoding="utf-8")
    (tmp / "t").mkdir(exist_ok=True)
    return path, {**os.environ, "TMPDIR": str(tmp / "t"), "PYTHONPATH": str(ROOT)}


def _run(script: str, tmp: Path) -> subprocess.CompletedProcess:
    path, env = _program(script, tmp)
    return subprocess.run([sys.executable, str(path)], cwd=tmp, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("exit_kind", sorted(EXITS))
def test_a_program_that_exits_with_workers_loaded_leaves_no_worker_process_or_folder(tmp_path, exit_kind):
    done = _run(EXITS[exit_kind], tmp_path)
    pids = [int(p) for p in done.stdout.split()]
    assert pids, (done.stdout, done.stderr)
    assert (done.returncode != 0) == (exit_kind == "raises"), done.stderr
    assert not list((tmp_path / "t").glob("bilevel-worker-*")), "a worker's folder outlived its program"
    assert not [p for p in pids if _alive(p)], "a worker process outlived its program"


@pytest.mark.parametrize("child_exit", ["sys.exit(0)", "del kept; import gc; gc.collect(); sys.exit(0)",
                                        "os._exit(0)"])
def test_a_forked_child_never_closes_the_workers_of_its_parent(tmp_path, child_exit):
    done = _run(textwrap.dedent(f'''
        from core.records import ProposalContext
        kept = load()
        pid = os.fork()
        if pid == 0:
            {child_exit}
        os.waitpid(pid, 0)
        homes = len(list(Path(os.environ["TMPDIR"]).glob("bilevel-worker-*")))
        ctx = ProposalContext(loop="inner", iteration=1, cycle=0, direction="minimize")
        kept.instance.guidance(ctx)  # the parent's worker still answers
        print(homes, kept.worker_pid)
    '''), tmp_path)
    assert done.returncode == 0, done.stderr
    homes, pid = (int(x) for x in done.stdout.split())
    assert homes == 1  # the child left the parent's folder alone
    assert not list((tmp_path / "t").glob("bilevel-worker-*")) and not _alive(pid)  # and the parent cleaned up


# -- a controller killed outright (SIGKILL) cannot clean up: the next one does -----------------------
HOLD = textwrap.dedent('''
    kept = [load() for _ in range(int(sys.argv[1]))]
    print(*(k.worker_pid for k in kept), flush=True)
    sys.stdin.read()  # held until the test kills this controller
''')


def _start(script: str, tmp: Path, *args: str) -> subprocess.Popen:
    path, env = _program(script, tmp)
    return subprocess.Popen([sys.executable, str(path), *args], cwd=tmp, env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _line(proc: subprocess.Popen, timeout: float = 120.0) -> str:
    """The controller's first line (its workers' pids), or a failure instead of a hang."""
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        proc.kill()
        pytest.fail(f"the controller printed nothing in {timeout:g} s: {proc.stderr.read()}")
    return proc.stdout.readline()


def _wait_gone(pids: list[int], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [p for p in pids if _alive(p)], "a worker kept running after its controller was killed"


@pytest.mark.parametrize("killed", [1, 2])
def test_the_folders_of_a_killed_controller_are_removed_by_the_next_one(tmp_path, killed):
    victims = [_start(HOLD, tmp_path, "2") for _ in range(killed)]
    workers = [int(p) for v in victims for p in _line(v).split()]
    assert len(workers) == 2 * killed
    for victim in victims:
        victim.kill()
        victim.wait(timeout=30)
    _wait_gone(workers)  # each worker reads EOF on its channel and exits
    assert len(list((tmp_path / "t").glob("bilevel-worker-*"))) == 2 * killed  # what SIGKILL leaves behind
    done = _run("kept = load()\nprint(kept.worker_pid)", tmp_path)
    assert done.returncode == 0, done.stderr
    assert not list((tmp_path / "t").glob("bilevel-worker-*")), "the next controller left the dead one's folders"


def test_a_live_controllers_folders_are_never_removed_by_another(tmp_path):
    holder = _start(HOLD, tmp_path, "1")
    try:
        worker = int(_line(holder))
        done = _run("kept = load()\nprint(kept.worker_pid)", tmp_path)
        assert done.returncode == 0, done.stderr
        left = list((tmp_path / "t").glob("bilevel-worker-*"))
        assert len(left) == 1 and _alive(worker)  # the holder's folder and worker are untouched
        holder.stdin.close()  # the holder exits normally and cleans up after itself
        assert holder.wait(timeout=60) == 0, holder.stderr.read()
        assert not list((tmp_path / "t").glob("bilevel-worker-*"))
    finally:
        holder.kill()


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _home(root: Path, name: str, owner: str | None) -> Path:
    home = root / f"{homes.PREFIX}{name}"
    (home / "work").mkdir(parents=True)
    if owner is not None:
        (home / homes.OWNER_FILE).write_text(owner + "\n", encoding="utf-8")
    return home


def _owner(pid: int, worker: int, *, started: str | None = None, namespace: str | None = None) -> str:
    me = homes.started(pid) or "-"
    return f"{pid} {started or me} {worker} {homes.started(worker) or '-'} {namespace or homes.namespace()}"


@pytest.mark.skipif(not Path("/proc/self/ns/pid").exists(), reason="needs Linux /proc")
class TestSweep:
    """Which folders :func:`core.homes.sweep_stale` removes: only those whose controller and
    worker both died in this PID namespace; everything it cannot vouch for is left alone."""

    def test_both_processes_dead_is_removed(self, tmp_path):
        home = _home(tmp_path, "dead", _owner(_dead_pid(), _dead_pid()))
        assert homes.sweep_stale(str(tmp_path)) == [str(home)] and not home.exists()

    def test_a_reused_controller_pid_with_another_start_time_counts_as_dead(self, tmp_path):
        home = _home(tmp_path, "reused", _owner(os.getpid(), _dead_pid(), started="1"))
        assert homes.sweep_stale(str(tmp_path)) == [str(home)]

    @pytest.mark.parametrize("case", ["controller-alive", "worker-alive", "no-owner-file", "garbage",
                                      "truncated", "other-namespace", "negative-pid",
                                      "pid-one", "other-machine"])
    def test_what_it_cannot_vouch_for_is_kept(self, tmp_path, case):
        sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        try:
            owner = {
                "controller-alive": _owner(os.getpid(), _dead_pid()),
                "worker-alive": _owner(_dead_pid(), sleeper.pid),
                "no-owner-file": None,
                "garbage": "not a pid at all",
                "truncated": f"{_dead_pid()} 5",
                "other-namespace": _owner(_dead_pid(), _dead_pid(), namespace="pid:[1]"),
                "negative-pid": f"-999999 - {_dead_pid()} - {homes.namespace()}",
                "pid-one": f"1 - {_dead_pid()} - {homes.namespace()}",
                "other-machine": _owner(_dead_pid(), _dead_pid(), namespace=homes.namespace().rsplit("@", 1)[0] + "@elsewhere"),
            }[case]
            home = _home(tmp_path, case, owner)
            assert homes.sweep_stale(str(tmp_path)) == [] and home.exists()
        finally:
            sleeper.kill()
            sleeper.wait()

    def test_links_and_other_names_are_never_followed_or_removed(self, tmp_path):
        target = _home(tmp_path / "elsewhere", "target", _owner(_dead_pid(), _dead_pid()))
        link = tmp_path / f"{homes.PREFIX}link"
        link.symlink_to(target, target_is_directory=True)
        other = tmp_path / "not-a-worker"
        (other / "work").mkdir(parents=True)
        (other / homes.OWNER_FILE).write_text(_owner(_dead_pid(), _dead_pid()), encoding="utf-8")
        assert homes.sweep_stale(str(tmp_path)) == []
        assert link.is_symlink() and target.exists() and other.exists()

    @pytest.mark.parametrize("kind", ["fifo", "symlink", "directory"])
    def test_an_owner_file_that_is_not_a_regular_file_is_ignored_without_blocking(self, tmp_path, kind):
        home = _home(tmp_path, kind, None)
        real = tmp_path / "real-owner"
        real.write_text(_owner(_dead_pid(), _dead_pid()), encoding="utf-8")
        target = home / homes.OWNER_FILE
        {"fifo": lambda: os.mkfifo(target), "symlink": lambda: target.symlink_to(real),
         "directory": lambda: target.mkdir()}[kind]()
        assert homes.sweep_stale(str(tmp_path)) == [] and home.exists()

    def test_a_tree_too_deep_to_remove_recursively_never_stops_the_sweep(self, tmp_path):
        # a worker may fill work/ with nesting deeper than the recursion limit; the next controller's
        # sweep logs what it cannot remove and goes on (the other dead home is still removed). The
        # limit is lowered for the sweep, so the tree stays shallow enough for pytest's own clean-up.
        deep = _home(tmp_path, "deep", _owner(_dead_pid(), _dead_pid()))
        fd = os.open(deep / "work", os.O_RDONLY)
        for _ in range(400):  # built level by level: os.makedirs itself recurses
            os.mkdir("d", dir_fd=fd)
            fd, parent = os.open("d", os.O_RDONLY, dir_fd=fd), fd
            os.close(parent)
        os.close(fd)
        plain = _home(tmp_path, "plain", _owner(_dead_pid(), _dead_pid()))
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(150)
        try:
            removed = homes.sweep_stale(str(tmp_path))
        finally:
            sys.setrecursionlimit(limit)
        assert str(plain) in removed and not plain.exists()
        assert (str(deep) in removed) == (not deep.exists())
