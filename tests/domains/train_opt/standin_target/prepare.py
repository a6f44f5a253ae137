"""The fixed half of the stand-in target: constants and the metric. The loop never edits this file.

It mirrors karpathy/autoresearch's ``prepare.py`` contract (``MAX_SEQ_LEN``, ``TIME_BUDGET``,
``EVAL_TOKENS``, ``evaluate_bpb``) without data or torch: ``evaluate_bpb`` is a deterministic, smooth
bowl over the hyperparameters, so a trial takes milliseconds and every change moves val_bpb.
The optimum lies away from train.py's defaults, so an honest search finds keeps.
"""

import math

MAX_SEQ_LEN = 2048  # tokens per sequence
TIME_BUDGET = 300  # seconds of training (nominal; the stand-in does not train)
EVAL_TOKENS = 40 * 524288  # tokens evaluated (nominal)

# name -> (optimum, weight) of a squared log2 distance
_LOG_TERMS = {
    "EMBEDDING_LR": (0.9, 0.010),
    "UNEMBEDDING_LR": (0.006, 0.010),
    "MATRIX_LR": (0.06, 0.020),
    "SCALAR_LR": (0.3, 0.005),
    "ASPECT_RATIO": (64, 0.010),
    "HEAD_DIM": (128, 0.005),
    "TOTAL_BATCH_SIZE": (2**18, 0.010),
}
# name -> (optimum, weight) of a squared linear distance
_LINEAR_TERMS = {
    "DEPTH": (10, 0.003),
    "WEIGHT_DECAY": (0.1, 0.05),
    "WARMUP_RATIO": (0.0, 0.05),
    "WARMDOWN_RATIO": (0.6, 0.04),
    "FINAL_LR_FRAC": (0.1, 0.02),
}


def evaluate_bpb(hp: dict) -> float:
    """Bits per byte of the stand-in 'model' trained with hyperparameters ``hp``."""
    bpb = 0.95
    for name, (opt, weight) in _LOG_TERMS.items():
        bpb += weight * math.log2(hp[name] / opt) ** 2
    for name, (opt, weight) in _LINEAR_TERMS.items():
        bpb += weight * (hp[name] - opt) ** 2
    beta1, beta2 = hp["ADAM_BETAS"]
    bpb += 0.2 * (beta1 - 0.85) ** 2 + 0.5 * (beta2 - 0.97) ** 2
    pattern = hp["WINDOW_PATTERN"]
    bpb += 0.004 * pattern.count("S") / len(pattern)
    return bpb
