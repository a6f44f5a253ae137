"""
Fixed half of the bundled CPU harness: corpus, split, tokenizer, dataloader, time budget, metric.

The search never edits this file; it edits train.py only. It follows the karpathy/autoresearch
contract at CPU size: byte tokens instead of a BPE (nothing can be fetched at run time), a short
context, a training budget of seconds rather than minutes, and the same `evaluate_bpb`.

Environment:
    BILEVEL_DATA         a UTF-8 text file (gzipped if it ends in .gz), or a folder of .txt/.md
                         files, used instead of the bundled corpus
    BILEVEL_FLOP_BUDGET  train for a fixed compute budget: this many training FLOPs (forward +
                         backward), so a bigger model gets fewer optimizer steps and the learning-rate
                         schedule runs by step fraction. Same train.py + same seed + same thread
                         count => the same val_bpb, however loaded the machine is.
    BILEVEL_TIME_BUDGET  train for this many wall-clock seconds instead (the autoresearch contract)
    BILEVEL_SEED         the training seed (parameter init and data order); overrides train.py's SEED

With neither budget set, training is fixed-compute on a CPU (DEFAULT_FLOP_BUDGET, about 15 s of
training on 2 cores at the default configuration) and wall-clock (DEFAULT_TIME_BUDGET) on a GPU.

`python prepare.py` prints what corpus would be used and how it splits.
"""

from __future__ import annotations

import ast
import functools
import gzip
import math
import os
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import torch

# ---------------------------------------------------------------------------
# Constants (fixed: changing any of them changes what val_bpb means)
# ---------------------------------------------------------------------------

MAX_SEQ_LEN = 128  # context length in tokens (= bytes), for training and evaluation
EVAL_TOKENS = 2**16  # validation targets scored by evaluate_bpb (fewer if the split is smaller)
VAL_FRACTION = 0.1  # the last 10% of the corpus bytes, cut at a line break, is the validation split
DEFAULT_TIME_BUDGET = 15.0  # seconds; ~22 s per trial on 2 CPU cores with startup and evaluation


DEFAULT_FLOP_BUDGET = 8e11  # training FLOPs; ~35 steps of the default model, ~15 s on 2 CPU cores


def _positive_env(name: str, unit: str) -> float | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number of {unit}, got {raw!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be positive, got {raw!r}")
    return value


def _budget() -> tuple[str, float, float | None]:
    seconds = _positive_env("BILEVEL_TIME_BUDGET", "seconds")
    flops = _positive_env("BILEVEL_FLOP_BUDGET", "FLOPs")
    if seconds is not None and flops is not None:
        raise ValueError("set BILEVEL_TIME_BUDGET or BILEVEL_FLOP_BUDGET, not both")
    if flops is not None:
        return "flops", DEFAULT_TIME_BUDGET, flops
    if seconds is not None:
        return "time", seconds, None
    if torch.cuda.is_available():
        return "time", DEFAULT_TIME_BUDGET, None
    return "flops", DEFAULT_TIME_BUDGET, DEFAULT_FLOP_BUDGET


# BUDGET_MODE "time": train for TIME_BUDGET wall-clock seconds (excludes startup/eval).
# BUDGET_MODE "flops": train for FLOP_BUDGET training FLOPs (steps = budget / FLOPs per step).
BUDGET_MODE, TIME_BUDGET, FLOP_BUDGET = _budget()


def planned_steps(flops_per_token: float, tokens_per_step: int) -> int:
    """Optimizer steps a fixed-compute run takes: at least one."""
    return max(1, int(FLOP_BUDGET // (flops_per_token * tokens_per_step)))


def training_seed(default: int) -> int:
    """The seed a run trains with: ``BILEVEL_SEED`` when set (the loop's ``--seed``), else ``default``."""
    raw = os.environ.get("BILEVEL_SEED", "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"BILEVEL_SEED must be an integer, got {raw!r}") from None


BUNDLED_CORPUS = "shakespeare.txt.gz"

# ---------------------------------------------------------------------------
# Corpus
# ---------------------------------------------------------------------------


def _bundled_corpus_path() -> Path | None:
    """The shipped corpus: next to this file (a run directory's copy), else in the installed package."""
    here = Path(__file__).resolve().parent / "data" / BUNDLED_CORPUS
    if here.is_file():
        return here
    # A run directory may hold prepare.py without data/; find the project's copy without importing it.
    import importlib.util

    try:
        spec = importlib.util.find_spec("domains")
    except (ImportError, ValueError):
        spec = None
    for root in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(root) / "train_opt" / "harness" / "data" / BUNDLED_CORPUS
        if candidate.is_file():
            return candidate
    return None


def _read_user_corpus(path: Path) -> bytes:
    if path.is_file():
        return gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in {".txt", ".md"})
        if not files:
            raise FileNotFoundError(f"BILEVEL_DATA folder {path} holds no .txt or .md files")
        return b"\n\n".join(p.read_bytes() for p in files)
    raise FileNotFoundError(f"BILEVEL_DATA points at {path}, which does not exist")


def _stdlib_docs() -> bytes:
    """Fallback corpus that exists wherever Python does: the language reference topics plus the
    docstrings of the top-level standard-library modules, in sorted order (~1.3 MB)."""
    parts: list[str] = []
    try:
        from pydoc_data.topics import topics

        parts.extend(topics[key] for key in sorted(topics))
    except ImportError:
        pass
    for src in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        try:
            tree = ast.parse(src.read_text(encoding="utf-8"))
        except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc:
                    parts.append(doc)
    return "\n\n".join(parts).encode("utf-8")


@functools.lru_cache(maxsize=1)
def load_corpus() -> tuple[bytes, str]:
    """(corpus bytes, a one-line description of where they came from)."""
    override = os.environ.get("BILEVEL_DATA", "").strip()
    if override:
        path = Path(override).expanduser()
        return _read_user_corpus(path), f"BILEVEL_DATA={path}"
    bundled = _bundled_corpus_path()
    if bundled is not None:
        with gzip.open(bundled, "rb") as fh:
            return fh.read(), f"bundled Shakespeare ({bundled})"
    print(
        f"WARNING: bundled corpus {BUNDLED_CORPUS} not found; using the standard library's docs. "
        "val_bpb is not comparable with runs on the bundled corpus.",
        file=sys.stderr,
    )
    return _stdlib_docs(), "standard-library docs (fallback)"


def split_corpus(data: bytes) -> tuple[bytes, bytes]:
    """(train, val): val is the tail from the first line break after the (1 - VAL_FRACTION) mark."""
    cut = int(len(data) * (1 - VAL_FRACTION))
    newline = data.find(b"\n", cut)
    if newline != -1 and newline + 1 < len(data):
        cut = newline + 1
    train, val = data[:cut], data[cut:]
    if len(train) < MAX_SEQ_LEN + 1 or len(val) < MAX_SEQ_LEN + 1:
        raise ValueError(
            f"corpus of {len(data)} bytes is too small: each split needs more than MAX_SEQ_LEN "
            f"({MAX_SEQ_LEN}) bytes, and the validation split is the last {VAL_FRACTION:.0%}"
        )
    return train, val


@functools.lru_cache(maxsize=2)
def load_tokens(split: str) -> torch.Tensor:
    """The split's tokens as a 1-D uint8 tensor (byte tokens need no encoder pass)."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    train, val = split_corpus(load_corpus()[0])
    raw = train if split == "train" else val
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8)


# ---------------------------------------------------------------------------
# Tokenizer: UTF-8 bytes, so every token is exactly one byte of text
# ---------------------------------------------------------------------------


class Tokenizer:
    vocab_size = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        return bytes(ids).decode("utf-8", errors="replace")

    def get_token_bytes(self, device: str | torch.device = "cpu") -> torch.Tensor:
        """UTF-8 bytes each token stands for (0 would mark a special token; byte tokens have none)."""
        return torch.ones(self.vocab_size, dtype=torch.int64, device=device)


# ---------------------------------------------------------------------------
# Dataloader
# ---------------------------------------------------------------------------


def make_dataloader(
    tokenizer: Tokenizer,
    batch_size: int,
    seq_len: int,
    split: str,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
    """Yield (inputs, targets, epoch) batches of shape (batch_size, seq_len), int64.

    train: windows at random offsets drawn from a generator seeded by `seed` (same seed, same
    batches). val: consecutive non-overlapping windows from the start of the split, wrapping.
    `epoch` counts passes over the split's tokens.
    """
    del tokenizer  # bytes are already tokens
    tokens = load_tokens(split)
    span = seq_len + 1
    if tokens.numel() < span:
        raise ValueError(f"{split} split has {tokens.numel()} tokens, fewer than seq_len + 1 = {span}")
    gen = torch.Generator().manual_seed(seed)
    n_windows = (tokens.numel() - 1) // seq_len
    index = 0
    drawn = 0
    while True:
        if split == "train":
            starts = torch.randint(0, tokens.numel() - span + 1, (batch_size,), generator=gen)
        else:
            starts = (torch.arange(index, index + batch_size) % n_windows) * seq_len
            index += batch_size
        offsets = starts[:, None] + torch.arange(span)[None, :]
        batch = tokens[offsets].long().to(device, non_blocking=True)
        epoch = 1 + drawn // tokens.numel()
        drawn += batch_size * seq_len
        yield batch[:, :-1], batch[:, 1:], epoch


# ---------------------------------------------------------------------------
# Evaluation (the fixed metric)
# ---------------------------------------------------------------------------


def eval_windows() -> int:
    """How many MAX_SEQ_LEN windows evaluate_bpb scores: EVAL_TOKENS worth, or the whole split."""
    return min(EVAL_TOKENS // MAX_SEQ_LEN, (load_tokens("val").numel() - 1) // MAX_SEQ_LEN)


@torch.no_grad()
def evaluate_bpb(model: torch.nn.Module, tokenizer: Tokenizer, batch_size: int) -> float:
    """Bits per byte on the validation split: sum of nats / (ln 2 * UTF-8 bytes of the targets).

    `model(x, y, reduction='none')` must return the per-token cross-entropy in nats. The scored
    tokens are the same every run (the first eval_windows() consecutive windows of the split) and
    do not depend on batch_size, so results are comparable across configs.
    """
    params = list(model.parameters())
    device = params[0].device if params else torch.device("cpu")
    token_bytes = tokenizer.get_token_bytes(device=device)
    tokens = load_tokens("val")
    n_windows = eval_windows()
    total_nats = 0.0
    total_bytes = 0
    for first in range(0, n_windows, batch_size):
        count = min(batch_size, n_windows - first)
        starts = torch.arange(first, first + count) * MAX_SEQ_LEN
        batch = tokens[starts[:, None] + torch.arange(MAX_SEQ_LEN + 1)[None, :]].long().to(device)
        x, y = batch[:, :-1], batch[:, 1:]
        loss_flat = model(x, y, reduction="none").reshape(-1).double()
        nbytes = token_bytes[y.reshape(-1)]
        mask = nbytes > 0
        total_nats += (loss_flat * mask).sum().item()
        total_bytes += int(nbytes.sum().item())
    return total_nats / (math.log(2) * total_bytes)


if __name__ == "__main__":
    data, origin = load_corpus()
    train_tokens, val_tokens = load_tokens("train"), load_tokens("val")
    print(f"corpus: {origin}")
    print(f"bytes: {len(data):,} (train {train_tokens.numel():,}, val {val_tokens.numel():,})")
    budget = f"{FLOP_BUDGET:.3g} FLOPs" if BUDGET_MODE == "flops" else f"{TIME_BUDGET}s"
    print(f"eval tokens: {eval_windows() * MAX_SEQ_LEN:,} | seq len: {MAX_SEQ_LEN} | budget: {budget}")
