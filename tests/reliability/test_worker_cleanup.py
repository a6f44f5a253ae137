"""A program that forgets its sandboxed workers leaves nothing behind: no worker process, no folder.

A worker is a child process with a private folder under the temporary directory. A run closes its
workers as it goes; these tests cover the program that does not — it exits with a mechanism still
loaded, normally or as a multiprocessing child (which skips ``atexit``) — and the forked child that
inherits its parent's workers, which must never close them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

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
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie not yet reaped by its (gone) parent is not running
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def _run(script: str, tmp: Path) -> subprocess.CompletedProcess:
    path = tmp / "prog.py"
    path.write_text(LOAD + script, encoding="utf-8")
    env = {**os.environ, "TMPDIR": str(tmp / "t"), "PYTHONPATH": str(ROOT)}
    (tmp / "t").mkdir()
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
