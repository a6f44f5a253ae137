"""The bundled CPU harness keeps the autoresearch contract: fixed prepare.py, editable train.py.

The training runs here use a 2-second budget and a 40 KB corpus given through BILEVEL_DATA, run
from a copy of the harness the way the runner copies it into a run directory.
"""

from __future__ import annotations

import ast
import gzip
import hashlib
import importlib.util
import math
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch

HARNESS = Path(__file__).resolve().parents[3] / "domains" / "train_opt" / "harness"
SUMMARY_KEYS = (
    "val_bpb",
    "training_seconds",
    "total_seconds",
    "peak_vram_mb",
    "mfu_percent",
    "total_tokens_M",
    "num_steps",
    "num_params_M",
    "depth",
    "seed",  # the training seed the run used (BILEVEL_SEED, else train.py's SEED)
    "budget_flops",  # the fixed-compute budget; 0 for a wall-clock budget
)
REQUIRED_CONSTANTS = (
    "DEPTH",
    "ASPECT_RATIO",
    "HEAD_DIM",
    "WINDOW_PATTERN",
    "TOTAL_BATCH_SIZE",
    "DEVICE_BATCH_SIZE",
    "EMBEDDING_LR",
    "UNEMBEDDING_LR",
    "MATRIX_LR",
    "SCALAR_LR",
    "WEIGHT_DECAY",
    "ADAM_BETAS",
    "WARMUP_RATIO",
    "WARMDOWN_RATIO",
    "FINAL_LR_FRAC",
    "SEED",
)
BANNER = "# Hyperparameters (edit these directly, no CLI flags needed)"
# sha256 of the bundled corpus's validation split: val_bpb is only comparable while this holds.
BUNDLED_VAL_SHA256 = "b6067bcc1e6818011213fab17f0e49f7f220120d6fe137bfb36a926276bea2a0"


@pytest.fixture
def tiny_corpus(tmp_path: Path) -> Path:
    with gzip.open(HARNESS / "data" / "shakespeare.txt.gz", "rb") as fh:
        text = fh.read(40_000)
    path = tmp_path / "tiny.txt"
    path.write_bytes(text)
    return path


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A run directory holding copies of prepare.py and train.py (no data/: BILEVEL_DATA supplies it)."""
    target = tmp_path / "run"
    target.mkdir()
    for name in ("prepare.py", "train.py"):
        shutil.copy(HARNESS / name, target / name)
    return target


def _env(corpus: Path | None, budget: float) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BILEVEL_")}
    env["BILEVEL_TIME_BUDGET"] = str(budget)
    env["BILEVEL_THREADS"] = "2"
    if corpus is not None:
        env["BILEVEL_DATA"] = str(corpus)
    return env


def _train(
    run_dir: Path, corpus: Path, budget: float = 2, timeout: float = 60
) -> subprocess.CompletedProcess:
    # Bytes, decoded by hand: text mode would turn the progress lines' carriage returns into newlines.
    result = subprocess.run(
        [sys.executable, "train.py"],
        cwd=run_dir,
        env=_env(corpus, budget),
        capture_output=True,
        timeout=timeout,
    )
    result.stdout, result.stderr = result.stdout.decode(), result.stderr.decode()
    return result


def _set_constant(run_dir: Path, name: str, value: object) -> None:
    """Rewrite one hyperparameter the way the search's AST editor does: the literal, by repr."""
    path = run_dir / "train.py"
    source = path.read_text()
    new, count = re.subn(rf"^{name} = [^#\n]*#", f"{name} = {value!r}  #", source, flags=re.M)
    assert count == 1, name
    path.write_text(new)


def _summary(stdout: str) -> dict[str, float]:
    tail = stdout.rsplit("\n---\n", 1)[1]
    values = {}
    for line in tail.splitlines():
        key, _, value = line.partition(":")
        values[key.strip()] = float(value)
    return values


def _load_prepare(monkeypatch: pytest.MonkeyPatch, corpus: Path | None = None):
    """A fresh import of prepare.py (its corpus cache and TIME_BUDGET are per import)."""
    for key in ("BILEVEL_DATA", "BILEVEL_TIME_BUDGET"):
        monkeypatch.delenv(key, raising=False)
    if corpus is not None:
        monkeypatch.setenv("BILEVEL_DATA", str(corpus))
    spec = importlib.util.spec_from_file_location(
        f"harness_prepare_{uuid.uuid4().hex}", HARNESS / "prepare.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _ConstantLoss(torch.nn.Module):
    """Stands in for a model: per-token loss from a function of the targets, recording what it saw."""

    def __init__(self, loss_fn):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.loss_fn = loss_fn
        self.seen: list[torch.Tensor] = []

    def forward(self, x, y, reduction="none"):
        assert reduction == "none"
        self.seen.append(y.clone())
        return self.loss_fn(x, y)


# --- train.py end to end ------------------------------------------------------------------------


def test_train_prints_parseable_summary_with_finite_bpb(run_dir: Path, tiny_corpus: Path) -> None:
    result = _train(run_dir, tiny_corpus, budget=2)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "\r" in result.stdout  # progress lines overwrite themselves
    summary = _summary(result.stdout)
    assert tuple(summary) == SUMMARY_KEYS
    assert math.isfinite(summary["val_bpb"]) and 0 < summary["val_bpb"] < 8.5
    assert summary["training_seconds"] >= 2
    assert summary["total_seconds"] >= summary["training_seconds"]
    assert summary["num_steps"] >= 1 and summary["depth"] == 4
    assert summary["peak_vram_mb"] == 0 and summary["mfu_percent"] == 0  # CPU


def test_exploding_learning_rate_prints_fail_and_exits_1_fast(run_dir: Path, tiny_corpus: Path) -> None:
    for name in ("EMBEDDING_LR", "UNEMBEDDING_LR", "MATRIX_LR", "SCALAR_LR"):
        _set_constant(run_dir, name, 1e30)
    started = time.monotonic()
    result = _train(run_dir, tiny_corpus, budget=60)
    assert result.returncode == 1
    assert "FAIL" in result.stdout.splitlines()
    assert "val_bpb:" not in result.stdout
    assert time.monotonic() - started < 30  # failed within a few steps, not at the end of the budget


def test_total_batch_size_not_a_multiple_is_rejected_with_a_clear_message(
    run_dir: Path, tiny_corpus: Path
) -> None:
    _set_constant(run_dir, "TOTAL_BATCH_SIZE", 1000)
    result = _train(run_dir, tiny_corpus, budget=1)
    assert result.returncode != 0
    assert "TOTAL_BATCH_SIZE (1000) must be a positive multiple" in result.stderr
    assert "val_bpb:" not in result.stdout


# --- train.py as an edit target -----------------------------------------------------------------


def test_hyperparameters_are_commented_literals_under_the_banner() -> None:
    source = (HARNESS / "train.py").read_text()
    assert BANNER in source
    lines = source.splitlines()
    start = lines.index(BANNER)
    constants: dict[str, object] = {}
    for node in ast.parse(source).body:
        if not (isinstance(node, ast.Assign) and node.lineno > start + 1):
            continue
        target = node.targets[0]
        if not (isinstance(target, ast.Name) and target.id.isupper()):
            continue
        if target.id in constants or target.id in ("DEVICE", "AUTOCAST"):
            break  # the setup section begins
        constants[target.id] = ast.literal_eval(node.value)
        assert "  # " in lines[node.lineno - 1], f"{target.id} has no inline comment"
    assert set(REQUIRED_CONSTANTS) <= set(constants)
    assert isinstance(constants["ADAM_BETAS"], tuple) and len(constants["ADAM_BETAS"]) == 2
    assert set(constants["WINDOW_PATTERN"]) <= {"S", "L"}


# --- prepare.py: the metric ---------------------------------------------------------------------


def test_evaluate_bpb_of_a_uniform_model_over_bytes_is_exactly_8(
    monkeypatch: pytest.MonkeyPatch, tiny_corpus: Path
) -> None:
    prepare = _load_prepare(monkeypatch, tiny_corpus)
    uniform = _ConstantLoss(lambda x, y: torch.full(y.shape, math.log(256), dtype=torch.float64))
    assert prepare.evaluate_bpb(uniform, prepare.Tokenizer(), batch_size=4) == pytest.approx(8.0, abs=1e-9)


def test_evaluate_bpb_is_cross_entropy_nats_over_ln2_bytes(
    monkeypatch: pytest.MonkeyPatch, tiny_corpus: Path
) -> None:
    prepare = _load_prepare(monkeypatch, tiny_corpus)

    def half_on_target(x, y):
        # Target logit log(255), the other 255 logits 0: p(target) = 255 / 510 = 1/2, one bit.
        logits = torch.zeros(*y.shape, 256, dtype=torch.float64)
        logits.scatter_(-1, y.unsqueeze(-1), math.log(255))
        return torch.nn.functional.cross_entropy(logits.view(-1, 256), y.reshape(-1), reduction="none")

    model = _ConstantLoss(half_on_target)
    assert prepare.evaluate_bpb(model, prepare.Tokenizer(), batch_size=5) == pytest.approx(1.0, abs=1e-9)


def test_evaluate_bpb_scores_the_same_tokens_whatever_the_batch_size(
    monkeypatch: pytest.MonkeyPatch, tiny_corpus: Path
) -> None:
    prepare = _load_prepare(monkeypatch, tiny_corpus)
    runs = []
    for batch_size in (3, 8):
        model = _ConstantLoss(lambda x, y: torch.ones(y.shape))
        prepare.evaluate_bpb(model, prepare.Tokenizer(), batch_size=batch_size)
        runs.append(torch.cat([y.reshape(-1) for y in model.seen]))
    assert torch.equal(runs[0], runs[1])
    assert runs[0].numel() == prepare.eval_windows() * prepare.MAX_SEQ_LEN
    val = prepare.load_tokens("val")
    assert torch.equal(runs[0], val[1 : runs[0].numel() + 1].long())  # the split's leading windows


# --- prepare.py: data ---------------------------------------------------------------------------


def test_bundled_corpus_is_real_text_of_at_least_1_mb(monkeypatch: pytest.MonkeyPatch) -> None:
    prepare = _load_prepare(monkeypatch)
    data, origin = prepare.load_corpus()
    assert "bundled" in origin
    assert len(data) >= 1_000_000
    text = data.decode("utf-8")
    assert "HAMLET:" in text and "MACBETH:" in text


def test_bundled_validation_split_is_fixed(monkeypatch: pytest.MonkeyPatch) -> None:
    first = _load_prepare(monkeypatch)
    second = _load_prepare(monkeypatch)
    val = bytes(first.load_tokens("val").tolist())
    assert val == bytes(second.load_tokens("val").tolist())
    data = first.load_corpus()[0]
    assert data.endswith(val) and data[len(data) - len(val) - 1 : len(data) - len(val)] == b"\n"
    assert abs(len(val) / len(data) - first.VAL_FRACTION) < 0.01
    assert first.eval_windows() * first.MAX_SEQ_LEN == first.EVAL_TOKENS  # the full eval set fits
    assert hashlib.sha256(val).hexdigest() == BUNDLED_VAL_SHA256


def test_bilevel_data_folder_joins_its_text_files_in_sorted_order(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    folder = tmp_path / "corpus"
    (folder / "sub").mkdir(parents=True)
    (folder / "b.md").write_text("B" * 3000)
    (folder / "sub" / "c.txt").write_text("C" * 3000)
    (folder / "a.txt").write_text("A" * 3000)
    (folder / "skip.py").write_text("X" * 3000)
    prepare = _load_prepare(monkeypatch, folder)
    data, origin = prepare.load_corpus()
    assert data == b"A" * 3000 + b"\n\n" + b"B" * 3000 + b"\n\n" + b"C" * 3000
    assert "BILEVEL_DATA" in origin


def test_time_budget_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    prepare = _load_prepare(monkeypatch)
    assert prepare.TIME_BUDGET == prepare.DEFAULT_TIME_BUDGET
    monkeypatch.setenv("BILEVEL_TIME_BUDGET", "2.5")
    assert prepare._budget() == ("time", 2.5, None)
    monkeypatch.setenv("BILEVEL_TIME_BUDGET", "soon")
    with pytest.raises(ValueError, match="BILEVEL_TIME_BUDGET"):
        prepare._budget()
