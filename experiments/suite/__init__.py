"""The cheap synthetic suite: frozen targets with known optima, the one search space each is searched
in, and the reference searches run on them (``python -m experiments.suite``)."""

from __future__ import annotations

from core.space import MultipleOf, SearchSpace
from experiments.suite.functions import (
    BOUNDS,
    CHOICES,
    HELD_OUT,
    OPTIMUM,
    POW2,
    SEQ_LEN,
    TARGETS,
    Crash,
    measure,
    true_value,
)

__all__ = ["HELD_OUT", "OPTIMUM", "TARGETS", "Crash", "measure", "space_for", "true_value"]


def space_for(name: str) -> SearchSpace:
    """The target's search space: a local box around its start, with its constraints built in."""
    start = TARGETS[name]["start"]
    constraints = []
    if "TOTAL_BATCH_SIZE" in start and "DEVICE_BATCH_SIZE" in start:
        constraints.append(MultipleOf("TOTAL_BATCH_SIZE", ("DEVICE_BATCH_SIZE", SEQ_LEN)))
    return SearchSpace.local_box(start, factor=4.0, pow2=POW2, pow2_span=2, choices=CHOICES,
                                 bounds={k: v for k, v in BOUNDS.items() if k in start}, constraints=constraints)
