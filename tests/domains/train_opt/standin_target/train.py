"""A stand-in for karpathy/autoresearch's train.py, for tests: same constants, same output contract.

No torch and no data: val_bpb comes from ``prepare.evaluate_bpb``, a smooth function of the
constants below. Like the real script it prints ``\\r`` progress lines, then ``---`` and ``key: value``
summary lines, and ``FAIL`` with exit status 1 when the loss "explodes" (here: MATRIX_LR > 0.5).

Test hooks (environment variables, read at run time):
  STANDIN_CRASH=1      raise an exception mid-run (no val_bpb line: a crash)
  STANDIN_SLEEP=S      spend S seconds "training" (so a test can kill the run mid-trial)
  STANDIN_LEDGER=PATH  append "start DIGEST:SEED" / "end DIGEST:SEED VAL_BPB" lines (counts executions)
  DEPTH == 31          start a child that ignores SIGTERM, print its pid and the process group, and hang
                       forever (a timeout: the executor must kill the whole group, grandchild included)
It also reports how many secret-looking variables (KEY, TOKEN, SECRET) reached its environment.
"""

import time

T_START = time.time()

import hashlib  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

from prepare import MAX_SEQ_LEN, evaluate_bpb  # noqa: E402

# ---------------------------------------------------------------------------
# Hyperparameters (edit these directly, no CLI flags needed)
# ---------------------------------------------------------------------------

# Model
DEPTH = 8  # number of transformer blocks
ASPECT_RATIO = 64  # model width = DEPTH * ASPECT_RATIO, rounded to HEAD_DIM
HEAD_DIM = 128  # channels per attention head
WINDOW_PATTERN = "SSSL"  # per-layer attention span, cycled: S short, L long

# Optimization
TOTAL_BATCH_SIZE = 2**19  # tokens per optimizer step
DEVICE_BATCH_SIZE = 128  # sequences per forward/backward pass
EMBEDDING_LR = 0.6  # learning rate of the token embedding (Adam)
UNEMBEDDING_LR = 0.004  # learning rate of the output head (Adam)
MATRIX_LR = 0.04  # learning rate of the weight matrices (Muon)
SCALAR_LR = 0.5  # learning rate of the per-layer scalars (Adam)
WEIGHT_DECAY = 0.2  # decoupled weight decay
ADAM_BETAS = (0.8, 0.95)  # Adam (beta1, beta2)
WARMUP_RATIO = 0.0  # fraction of the budget spent warming up
WARMDOWN_RATIO = 0.5  # fraction of the budget spent decaying
FINAL_LR_FRAC = 0.0  # final learning rate as a fraction of the peak

# ---------------------------------------------------------------------------

_NAMES = ("DEPTH", "ASPECT_RATIO", "HEAD_DIM", "WINDOW_PATTERN", "TOTAL_BATCH_SIZE", "DEVICE_BATCH_SIZE",
         "EMBEDDING_LR", "UNEMBEDDING_LR", "MATRIX_LR", "SCALAR_LR", "WEIGHT_DECAY", "ADAM_BETAS",
         "WARMUP_RATIO", "WARMDOWN_RATIO", "FINAL_LR_FRAC")
_STEPS = 10  # progress lines printed
_STUBBORN_CHILD = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"


def ledger(line: str) -> None:
    path = os.environ.get("STANDIN_LEDGER")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")


def main() -> int:
    # a trial is (configuration, training seed): a replicate of the same train.py on another seed is another trial
    digest = hashlib.sha256(open(__file__, "rb").read()).hexdigest()[:12] + ":" + os.environ.get("BILEVEL_SEED", "-")
    ledger(f"start {digest}")
    secrets = sorted(k for k in os.environ if re.search(r"KEY|TOKEN|SECRET", k, re.IGNORECASE))
    print(f"secret-looking environment variables: {', '.join(secrets) or 'none'}", flush=True)
    if DEPTH == 31:
        child = subprocess.Popen([sys.executable, "-c", _STUBBORN_CHILD])
        print(f"grandchild_pid: {child.pid}\npgid: {os.getpgrp()}", flush=True)
        while True:
            time.sleep(3600)
    assert TOTAL_BATCH_SIZE % (DEVICE_BATCH_SIZE * MAX_SEQ_LEN) == 0, "TOTAL_BATCH_SIZE must divide evenly"
    hp = {name: globals()[name] for name in _NAMES}
    target = evaluate_bpb(hp)
    sleep_s = float(os.environ.get("STANDIN_SLEEP") or 0)
    for step in range(_STEPS):
        loss = target * 2.0 + 4.0 * (1 - (step + 1) / _STEPS)
        if MATRIX_LR > 0.5:
            loss = loss * 10 ** (step + 1)  # diverges
        print(f"\rstep {step:05d} | loss {loss:.4f} | lr {MATRIX_LR:g}", end="", flush=True)
        if loss > 100:
            print("\nFAIL", flush=True)
            return 1
        if os.environ.get("STANDIN_CRASH") == "1" and step == 3:
            raise RuntimeError("stand-in crash requested (STANDIN_CRASH=1)")
        time.sleep(sleep_s / _STEPS)
    print()
    print("---")
    print(f"val_bpb: {target:.6f}")
    print(f"training_seconds: {sleep_s:.1f}")
    print(f"total_seconds: {time.time() - T_START:.1f}")
    print("peak_vram_mb: 0.0")
    print(f"num_steps: {_STEPS}")
    print(f"depth: {DEPTH}")
    print(f"secret_env_vars: {len(secrets)}")
    sys.stdout.flush()
    ledger(f"end {digest} {target:.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
