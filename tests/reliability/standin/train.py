"""Reliability stand-in for an autoresearch ``train.py``: same contract, no torch, and a fault plan.

It prints ``\\r`` progress lines, then ``---`` and ``key: value`` summary lines. What goes wrong is
chosen per invocation by the test, through environment variables read at run time:

  STANDIN_LEDGER=PATH   append "start N DIGEST" / "end N DIGEST" lines (counts executions, N = invocation)
  STANDIN_PLAN=PATH     JSON {"N": "fault"} — the N-th invocation (1-based, counted in PATH + ".count")
                        misbehaves: crash_start, crash_mid, fail, nan, no_summary, hang, stubborn,
                        flood:<MB>, leave_child
  STANDIN_SLEEP=S       spend S seconds "training" (a test can kill the controller mid-trial)
  STANDIN_GATE=PATH     keep "training" until PATH exists (at most 120 s): a test holds a run open
  STANDIN_PIDS=PATH     append "PID" lines for every process a fault starts (orphan checks)
  STANDIN_DUMP_ENV=1    print the whole environment into the log (secret checks)
"""

import json
import os
import subprocess
import sys
import time

from prepare import evaluate_bpb

# ---------------------------------------------------------------------------
# Hyperparameters (edit these directly, no CLI flags needed)
# ---------------------------------------------------------------------------

DEPTH = 8  # number of transformer blocks
MATRIX_LR = 0.04  # learning rate of the weight matrices
EMBEDDING_LR = 0.6  # learning rate of the token embedding
WEIGHT_DECAY = 0.2  # decoupled weight decay
WARMDOWN_RATIO = 0.5  # fraction of the budget spent decaying

# ---------------------------------------------------------------------------

_SLEEPER = "import time; time.sleep(600)"
_STUBBORN = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"


def _append(env_name, line):
    path = os.environ.get(env_name)
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")


def _invocation():
    plan_path = os.environ.get("STANDIN_PLAN")
    if not plan_path:
        return 0, ""
    counter = plan_path + ".count"
    n = (int(open(counter).read()) if os.path.exists(counter) else 0) + 1
    with open(counter, "w") as fh:
        fh.write(str(n))
    plan = json.load(open(plan_path))
    return n, plan.get(str(n), "")


def _spawn(code):
    child = subprocess.Popen([sys.executable, "-c", code])
    _append("STANDIN_PIDS", str(child.pid))
    return child


def main():
    n, fault = _invocation()
    digest = f"{MATRIX_LR!r}|{EMBEDDING_LR!r}|{WEIGHT_DECAY!r}|{WARMDOWN_RATIO!r}|{DEPTH!r}"
    _append("STANDIN_LEDGER", f"start {n} {digest}")
    _append("STANDIN_PIDS", str(os.getpid()))
    if os.environ.get("STANDIN_DUMP_ENV") == "1":
        for key, value in sorted(os.environ.items()):
            print(f"env {key}={value}")
    if fault == "crash_start":
        raise RuntimeError("stand-in: crash before the first step")
    if fault in ("hang", "stubborn"):
        _spawn(_STUBBORN if fault == "stubborn" else _SLEEPER)
        if fault == "stubborn":
            import signal

            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("hanging", flush=True)
        while True:
            time.sleep(3600)
    if fault.startswith("flood:"):
        chunk = (b"step 00000 | loss 9.9999 | progress line that goes on and on " * 20)[:1023] + b"\n"
        block = chunk * 1024  # 1 MiB
        for _ in range(int(fault.split(":")[1])):
            os.write(1, block)
    target = evaluate_bpb(dict(MATRIX_LR=MATRIX_LR, EMBEDDING_LR=EMBEDDING_LR, WEIGHT_DECAY=WEIGHT_DECAY,
                               WARMDOWN_RATIO=WARMDOWN_RATIO, DEPTH=DEPTH))
    sleep_s = float(os.environ.get("STANDIN_SLEEP") or 0)
    for step in range(5):
        print(f"\rstep {step:05d} | loss {target * 2 + 1 - step / 5:.4f}", end="", flush=True)
        if fault == "crash_mid" and step == 2:
            raise RuntimeError("stand-in: CUDA out of memory (simulated) mid-training")
        time.sleep(sleep_s / 5)
    gate, waited = os.environ.get("STANDIN_GATE"), time.monotonic()
    while gate and not os.path.exists(gate) and time.monotonic() - waited < 120:
        time.sleep(0.05)
    print()
    if fault == "fail":
        print("FAIL", flush=True)
        return 1
    if fault == "no_summary":
        print("training done (but the summary was never printed)")
        return 0
    if fault == "leave_child":
        _spawn(_SLEEPER)
    print("---")
    print(f"val_bpb: {float('nan') if fault == 'nan' else target:.6f}")
    print("training_seconds: 0.0")
    print("peak_vram_mb: 0.0")
    sys.stdout.flush()
    _append("STANDIN_LEDGER", f"end {n} {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
