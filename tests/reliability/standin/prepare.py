"""The fixed half of the reliability stand-in target (the loop never edits it): the metric only.

``evaluate_bpb`` is a smooth bowl over train.py's constants, so a trial costs one Python start-up.
"""

import math

MAX_SEQ_LEN = 2048  # tokens per sequence
TIME_BUDGET = 300  # seconds of training (nominal)


def evaluate_bpb(hp: dict) -> float:
    bpb = 0.95
    bpb += 0.02 * math.log2(hp["MATRIX_LR"] / 0.06) ** 2
    bpb += 0.01 * math.log2(hp["EMBEDDING_LR"] / 0.9) ** 2
    bpb += 0.05 * (hp["WEIGHT_DECAY"] - 0.1) ** 2
    bpb += 0.04 * (hp["WARMDOWN_RATIO"] - 0.6) ** 2
    bpb += 0.003 * (hp["DEPTH"] - 10) ** 2
    return bpb
