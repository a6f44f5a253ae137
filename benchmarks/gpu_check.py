"""One short check of the bundled harness on a CUDA GPU: tokens/s, MFU and val_bpb.

    python benchmarks/gpu_check.py [--budget 60] [--depth 8] [--dry-run]

Copies domains/train_opt/harness to a temporary folder, sets GPU-scale hyperparameters in its
train.py through the project's own editor (a wider, deeper model; a large token batch made of
several device batches, as karpathy/autoresearch trains), and trains for ``--budget`` wall-clock
seconds with bf16 autocast and ``torch.compile`` (the harness's CUDA path). Prints the figures the
harness reports. Refuses to run without CUDA (a CPU figure would say nothing about the GPU path);
``--dry-run`` prints the edited constants and exits.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from domains.train_opt.target import apply_changes, diff  # noqa: E402

HARNESS = ROOT / "domains" / "train_opt" / "harness"
SEQ = 128  # the harness's fixed MAX_SEQ_LEN (byte tokens)


def gpu_settings(depth: int) -> dict[str, object]:
    device_batch = 256
    return {"DEPTH": depth, "ASPECT_RATIO": 64, "HEAD_DIM": 128, "SHORT_WINDOW": 64,
            "DEVICE_BATCH_SIZE": device_batch, "TOTAL_BATCH_SIZE": device_batch * SEQ * 4,
            "MATRIX_LR": 0.002, "WARMDOWN_RATIO": 0.3}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=60.0, help="training seconds (wall clock)")
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--dry-run", action="store_true", help="print the edits and exit")
    args = parser.parse_args()
    source = (HARNESS / "train.py").read_text(encoding="utf-8")
    edited = apply_changes(source, gpu_settings(args.depth))
    if args.dry_run:
        print(diff(source, edited), end="")
        return 0
    try:
        import torch
    except ImportError:
        print("error: torch is not installed; install a CUDA build of torch first", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("error: no CUDA device is visible (torch.cuda.is_available() is False); run this on a GPU "
              "machine, or use benchmarks/harness_throughput.py on a CPU", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bilevel-gpu-check-") as tmp:
        work = Path(tmp) / "harness"
        shutil.copytree(HARNESS, work, ignore=shutil.ignore_patterns("__pycache__"))
        (work / "train.py").write_text(edited, encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if not k.startswith("BILEVEL_")}
        env["BILEVEL_TIME_BUDGET"] = f"{args.budget:g}"
        proc = subprocess.run([sys.executable, "train.py"], cwd=work, env=env, capture_output=True, text=True,
                              timeout=args.budget * 4 + 600)
    out = proc.stdout + proc.stderr
    summary = dict(re.findall(r"(?m)^(\w+): (\S+)$", out.split("\n---\n")[-1]))
    if proc.returncode != 0 or "val_bpb" not in summary:
        print(out[-3000:], file=sys.stderr)
        print(f"error: the harness failed (exit {proc.returncode})", file=sys.stderr)
        return 1
    seconds = float(summary["training_seconds"])
    tokens = float(summary["total_tokens_M"]) * 1e6
    print(f"device: {torch.cuda.get_device_name(0)} | torch {torch.__version__}")
    print(f"model: {summary['num_params_M']}M params, depth {summary['depth']} | steps {summary['num_steps']}")
    print(f"tokens/s: {tokens / max(seconds, 1e-9):,.0f} (all steps, incl. the untimed compile steps' tokens)")
    print(f"mfu_percent: {summary['mfu_percent']} (relative to H100 bf16 dense peak, as the harness computes it)")
    print(f"val_bpb: {summary['val_bpb']} | peak_vram_mb: {summary['peak_vram_mb']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
