"""The frozen suite of cheap synthetic targets (standard library only: copied as a target's prepare.py).

Each target is a function of named hyperparameters (UPPER_CASE, as in an autoresearch ``train.py``)
with a **known optimum** (``OPTIMUM``, the same for all: 3.0), a starting configuration, measurement
noise that depends on the training seed, and the structure real targets have: interactions, a
divisibility constraint, powers of two, crash regions. A trial takes microseconds, so many paired
seeds are cheap. Frozen: changing a function, start or noise changes every figure computed on it.

``measure(name, config, seed)`` returns the metric, or raises :class:`Crash` (the configuration
cannot run: out of memory, divergence). ``true_value(name, config)`` is the noise-free metric, for
regret. Two targets are held out (``HELD_OUT``): search methods are judged on them without having
been tuned on them.
"""

from __future__ import annotations

import hashlib
import json
import math
import random

OPTIMUM = 3.0
SEQ_LEN = 128
HELD_OUT = ("ridge", "needle")


class Crash(Exception):
    """The configuration cannot run (reported as a crash, like a failed training run)."""


def _u(value: float, start: float) -> float:
    """Doublings away from the starting value."""
    return math.log2(value / start)


def lr_bowl(c: dict) -> float:
    """Four learning rates, separable: each has its best value within two doublings of the start."""
    terms = ((c["EMBEDDING_LR"], 0.03, 1.0, 0.6), (c["UNEMBEDDING_LR"], 0.003, -0.8, 0.4),
             (c["MATRIX_LR"], 0.003, 1.3, 1.0), (c["SCALAR_LR"], 0.03, -0.5, 0.2))
    return OPTIMUM + sum(w * (_u(v, s) - best) ** 2 for v, s, best, w in terms)


def coupled(c: dict) -> float:
    """A curved valley: the best MATRIX_LR depends on WARMUP_RATIO, and weight decay on both."""
    u = _u(c["MATRIX_LR"], 0.003)
    warm = c["WARMUP_RATIO"]
    wd = c["WEIGHT_DECAY"]
    best_u = 1.5 * warm - 0.2
    return OPTIMUM + 0.5 * (warm - 0.6) ** 2 + 1.2 * (u - best_u) ** 2 + 2.0 * (wd - 0.1 - 0.1 * warm) ** 2


def batch(c: dict) -> float:
    """Batch size, device batch, depth and learning rate: the best LR grows with the batch (an
    interaction), too much memory (device batch × depth) crashes, and TOTAL_BATCH_SIZE must be a
    multiple of DEVICE_BATCH_SIZE × SEQ_LEN."""
    tbs, dbs, depth, lr = c["TOTAL_BATCH_SIZE"], c["DEVICE_BATCH_SIZE"], c["DEPTH"], c["MATRIX_LR"]
    if tbs % (dbs * SEQ_LEN):
        raise Crash(f"TOTAL_BATCH_SIZE {tbs} is not a multiple of DEVICE_BATCH_SIZE*SEQ_LEN {dbs * SEQ_LEN}")
    if dbs * depth > 256:
        raise Crash("out of memory")
    b = math.log2(tbs / 4096)  # best: one halving (b = -1)
    return (OPTIMUM + 0.3 * (b + 1) ** 2 + 0.05 * (depth - 6) ** 2 + 0.6 * (_u(lr, 0.003) - 0.5 * b - 0.8) ** 2
            + 0.01 * abs(math.log2(dbs / 16)))


def cliff(c: dict) -> float:
    """Higher learning rates help right up to a divergence edge; past it the run fails."""
    u = _u(c["MATRIX_LR"], 0.003)
    if u > 1.6 + 0.5 * c["WARMUP_RATIO"]:
        raise Crash("loss diverged")
    return OPTIMUM + 0.4 * (u - 1.4) ** 2 + 0.3 * (c["WARMUP_RATIO"] - 0.4) ** 2 + 0.2 * (_u(c["EMBEDDING_LR"], 0.03) + 0.5) ** 2


def ridge(c: dict) -> float:
    """Held out. Five coupled dimensions (an ill-conditioned, rotated bowl) and a pattern choice."""
    x = [_u(c["EMBEDDING_LR"], 0.03), _u(c["MATRIX_LR"], 0.003), _u(c["SCALAR_LR"], 0.03),
         c["WARMDOWN_RATIO"] * 4 - 1.6, (c["DEPTH"] - 4) / 2]
    best = [0.5, 1.0, -0.5, 0.0, 0.5]
    d = [a - b for a, b in zip(x, best, strict=True)]
    quad = (d[0] + d[1]) ** 2 * 1.0 + (d[0] - d[1]) ** 2 * 0.1 + (d[2] + 0.5 * d[3]) ** 2 * 0.6 + d[3] ** 2 * 0.2 + d[4] ** 2 * 0.3
    pattern = {"SSSL": 0.0, "SSLL": 0.05, "L": 0.12, "SL": 0.03}.get(c["WINDOW_PATTERN"], 0.2)
    return OPTIMUM + quad + pattern


def needle(c: dict) -> float:
    """Held out. A wide, almost flat plateau with a narrow basin two doublings away in two knobs."""
    u, v = _u(c["MATRIX_LR"], 0.003), _u(c["UNEMBEDDING_LR"], 0.003)
    r2 = (u - 1.5) ** 2 + (v + 1.2) ** 2
    heads = c["HEAD_DIM"]
    return OPTIMUM + 0.8 * (1 - math.exp(-r2 / 0.6)) + 0.02 * r2 + 0.03 * abs(math.log2(heads / 64))


TARGETS = {
    "lr_bowl": {"fn": lr_bowl, "noise": 0.01,
                "start": {"EMBEDDING_LR": 0.03, "UNEMBEDDING_LR": 0.003, "MATRIX_LR": 0.003, "SCALAR_LR": 0.03}},
    "coupled": {"fn": coupled, "noise": 0.01,
                "start": {"MATRIX_LR": 0.003, "WARMUP_RATIO": 0.0, "WEIGHT_DECAY": 0.0}},
    "batch": {"fn": batch, "noise": 0.01,
              "start": {"TOTAL_BATCH_SIZE": 4096, "DEVICE_BATCH_SIZE": 16, "DEPTH": 4, "MATRIX_LR": 0.003}},
    "cliff": {"fn": cliff, "noise": 0.01,
              "start": {"MATRIX_LR": 0.003, "WARMUP_RATIO": 0.0, "EMBEDDING_LR": 0.03}},
    "ridge": {"fn": ridge, "noise": 0.02,
              "start": {"EMBEDDING_LR": 0.03, "MATRIX_LR": 0.003, "SCALAR_LR": 0.03, "WARMDOWN_RATIO": 0.0,
                        "DEPTH": 4, "WINDOW_PATTERN": "L"}},
    "needle": {"fn": needle, "noise": 0.005,
               "start": {"MATRIX_LR": 0.003, "UNEMBEDDING_LR": 0.003, "HEAD_DIM": 32}},
}
# Known ranges of zero-based or categorical knobs (everything else: a box around the start).
BOUNDS = {"WARMUP_RATIO": (0.0, 1.0), "WEIGHT_DECAY": (0.0, 0.5), "WARMDOWN_RATIO": (0.0, 1.0)}
CHOICES = {"WINDOW_PATTERN": ("L", "SL", "SSL", "SSSL", "SSLL")}
POW2 = ("TOTAL_BATCH_SIZE", "DEVICE_BATCH_SIZE", "HEAD_DIM")


def true_value(name: str, config: dict) -> float:
    """The noise-free metric; raises :class:`Crash` where the configuration cannot run."""
    return TARGETS[name]["fn"](config)


def measure(name: str, config: dict, seed: int) -> float:
    """One trial: the metric plus noise drawn from (target, configuration, training seed) — the same
    inputs always give the same number, another seed another draw."""
    value = true_value(name, config)
    key = json.dumps([name, sorted(config.items()), int(seed)], default=str)
    rng = random.Random(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big"))
    return value + rng.gauss(0.0, TARGETS[name]["noise"])
