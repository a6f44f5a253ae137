"""The target editor: hyperparameters are found by parsing train.py and edited one literal at a time.

Both the stand-in target (tests/domains/train_opt/standin_target, the autoresearch constant names
and defaults) and the bundled CPU harness must be readable by the same editor.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from core.errors import UserError
from domains.train_opt import target as tgt

HERE = Path(__file__).parent
STANDIN_TRAIN = HERE / "standin_target" / "train.py"
HARNESS_TRAIN = HERE.parents[2] / "domains" / "train_opt" / "harness" / "train.py"
AUTORESEARCH_NAMES = (
    "DEPTH", "ASPECT_RATIO", "HEAD_DIM", "WINDOW_PATTERN", "TOTAL_BATCH_SIZE", "DEVICE_BATCH_SIZE", "EMBEDDING_LR",
    "UNEMBEDDING_LR", "MATRIX_LR", "SCALAR_LR", "WEIGHT_DECAY", "ADAM_BETAS", "WARMUP_RATIO", "WARMDOWN_RATIO",
    "FINAL_LR_FRAC",
)


@pytest.fixture(scope="module")
def standin_source() -> str:
    return STANDIN_TRAIN.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def specs(standin_source: str) -> dict[str, tgt.ParamSpec]:
    return tgt.discover(standin_source)


# -- discovery ---------------------------------------------------------------------------------------


def test_discovery_finds_exactly_the_autoresearch_constants_of_the_standin(specs):
    assert tuple(specs) == AUTORESEARCH_NAMES  # file order; lower-case and non-literal names are skipped
    assert all(s.editable for s in specs.values())


def test_discovery_reads_the_autoresearch_defaults_with_kinds_and_ranges(specs):
    expected = {
        "DEPTH": ("int", 8), "ASPECT_RATIO": ("int", 64), "HEAD_DIM": ("int", 128), "WINDOW_PATTERN": ("str", "SSSL"),
        "TOTAL_BATCH_SIZE": ("int", 2**19), "DEVICE_BATCH_SIZE": ("int", 128), "EMBEDDING_LR": ("float", 0.6),
        "UNEMBEDDING_LR": ("float", 0.004), "MATRIX_LR": ("float", 0.04), "SCALAR_LR": ("float", 0.5),
        "WEIGHT_DECAY": ("float", 0.2), "ADAM_BETAS": ("tuple", (0.8, 0.95)), "WARMUP_RATIO": ("float", 0.0),
        "WARMDOWN_RATIO": ("float", 0.5), "FINAL_LR_FRAC": ("float", 0.0),
    }
    assert {n: (s.kind, s.default) for n, s in specs.items()} == expected
    for name, spec in specs.items():
        if spec.kind in ("int", "float", "tuple"):
            assert spec.low is not None and spec.high is not None and spec.low <= spec.high, name
            defaults = spec.default if spec.kind == "tuple" else (spec.default,)
            assert all(spec.low <= v <= spec.high for v in defaults), f"{name} default outside its own range"
    assert specs["HEAD_DIM"].pow2 and specs["TOTAL_BATCH_SIZE"].pow2 and specs["DEVICE_BATCH_SIZE"].pow2
    assert specs["MATRIX_LR"].log and specs["EMBEDDING_LR"].log
    assert (specs["WARMUP_RATIO"].low, specs["WARMUP_RATIO"].high) == (0.0, 1.0)
    assert specs["ADAM_BETAS"].length == 2
    assert specs["WINDOW_PATTERN"].pattern and specs["WINDOW_PATTERN"].editable


def test_power_expression_constants_are_read_as_ints():
    found = tgt.discover("TOTAL_BATCH_SIZE = 2**19  # tokens\nEVAL = 40 * 524288\nOFFSET = 64 + 1 - 2\n")
    assert found["TOTAL_BATCH_SIZE"].default == 524288 and found["TOTAL_BATCH_SIZE"].kind == "int"
    assert found["EVAL"].default == 40 * 524288
    assert found["OFFSET"].default == 63


def test_discovery_skips_what_is_not_a_module_level_upper_case_literal():
    source = (
        "import time\n"
        "T_START = time.time()\n"  # not a literal
        "lower_case = 3\n"
        "NAMES = ('a', 'b')\n"  # a tuple of strings is no hyperparameter
        "HUGE = 2**1000\n"  # exponent refused
        "MIXED = 2.0**3\n"  # only integer arithmetic
        "def f():\n    INNER = 1\n"
        "KEPT = 5  # the only one\n"
    )
    assert list(tgt.discover(source)) == ["KEPT"]


def test_discovery_of_the_bundled_harness_uses_the_same_names(specs):
    harness = tgt.discover(HARNESS_TRAIN.read_text(encoding="utf-8"))
    assert set(AUTORESEARCH_NAMES) <= set(harness)
    for name in AUTORESEARCH_NAMES:
        assert harness[name].kind == specs[name].kind, name
        assert harness[name].editable, name
    assert not harness["SEED"].editable  # changing the seed is noise, not progress


def test_discovery_keeps_each_inline_comment(specs):
    assert specs["DEPTH"].comment == "number of transformer blocks"
    assert specs["ADAM_BETAS"].comment == "Adam (beta1, beta2)"


def test_inline_comment_is_read_after_the_value_not_from_a_hash_inside_a_string():
    found = tgt.discover('WINDOW_PATTERN = "SL"  # span per layer\nTAG = "a#b"  # why it matters\n')
    assert found["WINDOW_PATTERN"].comment == "span per layer"
    assert found["TAG"].comment == "why it matters"


def test_a_target_that_does_not_parse_is_a_user_error():
    with pytest.raises(UserError, match="line 1"):
        tgt.discover("DEPTH = = 8\n")


# -- editing -----------------------------------------------------------------------------------------


def _changed_lines(old: str, new: str) -> list[tuple[str, str]]:
    a, b = old.splitlines(), new.splitlines()
    assert len(a) == len(b)
    return [(x, y) for x, y in zip(a, b, strict=True) if x != y]


@pytest.mark.parametrize(
    ("name", "value", "rendered"),
    [
        ("MATRIX_LR", 0.06, "MATRIX_LR = 0.06  # learning rate of the weight matrices (Muon)"),
        ("DEPTH", 10, "DEPTH = 10  # number of transformer blocks"),
        ("TOTAL_BATCH_SIZE", 2**18, "TOTAL_BATCH_SIZE = 2**18  # tokens per optimizer step"),
        ("WINDOW_PATTERN", "SSLL", "WINDOW_PATTERN = 'SSLL'  # per-layer attention span, cycled: S short, L long"),
        ("ADAM_BETAS", [0.85, 0.97], "ADAM_BETAS = (0.85, 0.97)  # Adam (beta1, beta2)"),
        ("WEIGHT_DECAY", 0, "WEIGHT_DECAY = 0.0  # decoupled weight decay"),
        ("EMBEDDING_LR", 1e-05, "EMBEDDING_LR = 1e-05  # learning rate of the token embedding (Adam)"),
    ],
)
def test_each_edit_is_a_one_line_repr_diff_that_keeps_the_comment(standin_source, specs, name, value, rendered):
    new = tgt.apply_changes(standin_source, {name: value}, specs)
    assert _changed_lines(standin_source, new) == [(next(ln for ln in standin_source.splitlines()
                                                        if ln.startswith(f"{name} = ")), rendered)]
    assert tgt.discover(new)[name].default == tgt.coerce(specs[name], value)
    patch = tgt.diff(standin_source, new)
    assert sum(1 for ln in patch.splitlines() if ln.startswith("-") and not ln.startswith("---")) == 1
    assert sum(1 for ln in patch.splitlines() if ln.startswith("+") and not ln.startswith("+++")) == 1


def test_several_changes_touch_only_their_own_lines(standin_source, specs):
    changes = {"DEPTH": 12, "MATRIX_LR": 0.05, "WARMUP_RATIO": 0.1, "ADAM_BETAS": (0.9, 0.99)}
    new = tgt.apply_changes(standin_source, changes, specs)
    assert len(_changed_lines(standin_source, new)) == 4
    assert {n: tgt.values(new)[n] for n in changes} == {**changes, "ADAM_BETAS": (0.9, 0.99)}
    ast.parse(new)


def test_an_integral_float_for_an_int_is_written_as_an_int(standin_source, specs):
    new = tgt.apply_changes(standin_source, {"HEAD_DIM": 64.0}, specs)
    assert "HEAD_DIM = 64  #" in new


def test_a_multi_line_constant_is_refused():
    source = "ADAM_BETAS = (\n    0.8,\n    0.95,\n)\n"
    with pytest.raises(ValueError, match="several lines"):
        tgt.apply_changes(source, {"ADAM_BETAS": (0.9, 0.95)})


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"MATRIX_LR": "1; import os"}, "must be a number"),
        ({"WINDOW_PATTERN": "__import__('os')"}, "matching"),
        ({"WINDOW_PATTERN": "SSSL\nimport os"}, "matching"),
        ({"HEAD_DIM": 96.5}, "must be an int"),
        ({"HEAD_DIM": 96}, "power of two"),
        ({"MATRIX_LR": float("nan")}, "finite"),
        ({"MATRIX_LR": float("inf")}, "finite"),
        ({"DEPTH": float("nan")}, "must be an int"),
        ({"MATRIX_LR": 5.0}, "outside"),
        ({"DEPTH": 0}, "outside"),
        ({"WARMUP_RATIO": -0.1}, "outside"),
        ({"DEPTH": True}, "must be an int"),
        ({"MATRIX_LR": False}, "must be a number"),
        ({"ADAM_BETAS": [0.9]}, "tuple of 2"),
        ({"ADAM_BETAS": [0.9, 0.95, 0.99]}, "tuple of 2"),
        ({"ADAM_BETAS": [0.9, "0.95)\nimport os; ("]}, "must be a number"),
        ({"ADAM_BETAS": [0.9, 2.0]}, "outside"),
        ({"ADAM_BETAS": "(0.9, 0.95)"}, "tuple of 2"),
        ({"DEPTH": [8]}, "must be an int"),
        ({"__import__": 1}, "unknown hyperparameter"),
        ({"NOT_A_PARAM": 1}, "unknown hyperparameter"),
        ({"DEPTH": 10, "MATRIX_LR": "x"}, "must be a number"),  # one bad value spoils the whole edit
    ],
    ids=lambda v: repr(v)[:40],
)
def test_an_injection_or_invalid_value_is_rejected_and_nothing_is_written(standin_source, specs, changes, reason):
    before = STANDIN_TRAIN.read_text(encoding="utf-8")
    with pytest.raises(ValueError, match=reason):
        tgt.apply_changes(standin_source, changes, specs)
    with pytest.raises(ValueError):  # also when the specs are discovered from the source itself
        tgt.apply_changes(standin_source, changes)
    assert STANDIN_TRAIN.read_text(encoding="utf-8") == before == standin_source


def test_a_non_editable_constant_is_refused():
    source = "SEED = 42  # init\nDEPTH = 4  # blocks\n"
    with pytest.raises(ValueError, match="not editable"):
        tgt.apply_changes(source, {"SEED": 43})


def test_region_names_each_changed_parameter_and_direction(specs, standin_source):
    current = tgt.values(standin_source)
    assert tgt.region(specs, current, {"MATRIX_LR": 0.08, "DEPTH": 6}) == "DEPTH:down+MATRIX_LR:up"
    assert tgt.region(specs, current, {"WINDOW_PATTERN": "L"}) == "WINDOW_PATTERN:set"
    assert tgt.region(specs, current, {"ADAM_BETAS": (0.9, 0.99)}) == "ADAM_BETAS:up"
