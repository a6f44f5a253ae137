"""Run the train_opt CLI and SIGKILL it at a chosen point (for the controller-kill test).

    python -m tests.reliability.kill_runner MODE N [CLI ARGS...]

MODE says where the process kills itself (``SIGKILL``: no cleanup, no ``finally``):

  journal    in the N-th journal append, after writing part of a line (a torn write)
  proposal   in the N-th proposal step of any loop (the proposer, a proposing mechanism, the Level-2
             designer: whoever answers, the step is the controller's)
  trial      0.05 s into the N-th training child, while it runs
  none       nowhere (the test may still kill it from outside at a random time)
"""

from __future__ import annotations

import os
import runpy
import signal
import subprocess
import sys
import threading


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def arm(mode: str, n: int) -> None:
    count = [0]

    def due() -> bool:
        count[0] += 1
        return count[0] == n

    if mode == "journal":
        from core.state import Journal

        real_append = Journal.append

        def append(self, event, **kwargs):
            if due():
                with open(self.path, "ab", buffering=0) as fh:
                    fh.write(b'{"seq":%d,"ts":"2026-01-01T00:00:00.000+00:00","type":"tr' % len(self))
                die()
            return real_append(self, event, **kwargs)

        Journal.append = append
    elif mode == "proposal":
        # the controller's step, not a proposer class: a proposing mechanism may answer instead
        from core.inner_loop import InnerLoopController

        real_propose = InnerLoopController._propose

        def _propose(self, ctx):
            if due():
                die()
            return real_propose(self, ctx)

        InnerLoopController._propose = _propose
    elif mode == "trial":
        real_popen = subprocess.Popen

        class Popen(real_popen):
            def __init__(self, args, *rest, **kwargs):
                super().__init__(args, *rest, **kwargs)
                if any(str(a).endswith("train.py") for a in args) and due():
                    threading.Timer(0.05, die).start()

        subprocess.Popen = Popen
    elif mode != "none":
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    mode, n = sys.argv[1], int(sys.argv[2])
    arm(mode, n)
    sys.argv = ["domains.train_opt.cli", *sys.argv[3:]]
    runpy.run_module("domains.train_opt.cli", run_name="__main__")
