"""The shared search space: bounded boxes, integer/pow2 structure, constraints built into sampling."""

from __future__ import annotations

import random

import pytest

from core.space import Dim, MultipleOf, SearchSpace

START = {"TOTAL_BATCH_SIZE": 4096, "DEVICE_BATCH_SIZE": 16, "DEPTH": 4, "MATRIX_LR": 0.003, "WARMUP_RATIO": 0.0,
         "WINDOW_PATTERN": "SSSL"}


def space() -> SearchSpace:
    return SearchSpace.local_box(START, factor=4.0, pow2=("TOTAL_BATCH_SIZE", "DEVICE_BATCH_SIZE"),
                                 bounds={"WARMUP_RATIO": (0.0, 1.0)}, choices={"WINDOW_PATTERN": ("L", "SL")},
                                 constraints=[MultipleOf("TOTAL_BATCH_SIZE", ("DEVICE_BATCH_SIZE", 128))])


def test_the_box_is_local_not_decades():
    s = space()
    lr = s.dim("MATRIX_LR")
    assert (lr.low, lr.high, lr.log) == (0.003 / 4, 0.003 * 4, True)
    assert (s.dim("DEPTH").kind, s.dim("DEPTH").low, s.dim("DEPTH").high) == ("int", 1, 16)
    assert (s.dim("TOTAL_BATCH_SIZE").low, s.dim("TOTAL_BATCH_SIZE").high) == (1024, 16384)
    assert set(s.dim("WINDOW_PATTERN").choices) == {"SSSL", "L", "SL"}


def test_every_sample_is_feasible_and_keeps_its_structure():
    s, rng = space(), random.Random(0)
    for _ in range(500):
        c = s.sample(rng)
        assert s.feasible(c) is None
        assert c["TOTAL_BATCH_SIZE"] % (c["DEVICE_BATCH_SIZE"] * 128) == 0
        assert c["TOTAL_BATCH_SIZE"] & (c["TOTAL_BATCH_SIZE"] - 1) == 0 and isinstance(c["DEPTH"], int)


@pytest.mark.parametrize(("change", "reason"), [
    ({"TOTAL_BATCH_SIZE": 1024, "DEVICE_BATCH_SIZE": 16}, "not a multiple"),
    ({"DEPTH": 40}, "outside the search space"),
    ({"DEPTH": 4.5}, "outside the search space"),
    ({"TOTAL_BATCH_SIZE": 3000}, "outside the search space"),
    ({"WINDOW_PATTERN": "XYZ"}, "outside the search space"),
    ({"MATRIX_LR": True}, "outside the search space"),
])
def test_one_feasibility_check_names_what_is_wrong(change, reason):
    assert reason in (space().feasible({**START, **change}) or "")


def test_the_start_is_feasible_and_a_missing_name_is_not():
    s = space()
    assert s.feasible(START) is None
    missing = dict(START)
    del missing["DEPTH"]
    assert s.feasible(missing) == "DEPTH is missing"


def test_steps_stay_in_bounds_and_on_the_lattice():
    s = space()
    assert s.dim("TOTAL_BATCH_SIZE").step(16384, +1) == 16384
    assert s.dim("TOTAL_BATCH_SIZE").step(4096, -1) == 2048
    assert s.dim("DEPTH").step(4, +1, 0.1) == 5  # an int step always moves
    assert s.dim("MATRIX_LR").step(0.003, +1) == 0.006


@pytest.mark.parametrize("bad", [
    lambda: Dim("X", "float", low=1.0, high=1.0),
    lambda: Dim("X", "pow2", low=3, high=8),
    lambda: Dim("X", "choice"),
    lambda: SearchSpace.local_box({"X": 0.0}),
    lambda: SearchSpace.local_box({"X": 12}, pow2=("X",)),
])
def test_a_malformed_space_is_refused_at_once(bad):
    with pytest.raises(ValueError):
        bad()
