"""An edited constant written as an expression keeps its form when the new value fits it."""

from __future__ import annotations

import pytest

from domains.train_opt.target import apply_changes, discover

SOURCE = (
    "TOTAL_BATCH_SIZE = 2**19  # tokens per step\n"
    "WINDOW = 64 * 1024  # tokens\n"
    "HIDDEN = 4 * 256  # units\n"
    "DEPTH = 8  # blocks\n"
)


@pytest.mark.parametrize(("name", "value", "line"), [
    ("TOTAL_BATCH_SIZE", 2**18, "TOTAL_BATCH_SIZE = 2**18  # tokens per step"),
    ("TOTAL_BATCH_SIZE", 2**20, "TOTAL_BATCH_SIZE = 2**20  # tokens per step"),
    ("WINDOW", 32 * 1024, "WINDOW = 32 * 1024  # tokens"),
    ("HIDDEN", 6 * 256, "HIDDEN = 6 * 256  # units"),
])
def test_a_value_that_fits_the_expression_is_written_in_that_form(name: str, value: int, line: str):
    edited = apply_changes(SOURCE, {name: value})
    assert line in edited.splitlines()
    assert discover(edited)[name].default == value


@pytest.mark.parametrize(("name", "value", "line"), [
    ("WINDOW", 1000, "WINDOW = 1000  # tokens"),       # not a multiple of 1024
    ("HIDDEN", 1000, "HIDDEN = 1000  # units"),         # not a multiple of 256
    ("DEPTH", 6, "DEPTH = 6  # blocks"),               # a plain literal stays plain
])
def test_a_value_that_does_not_fit_is_written_as_a_plain_literal(name: str, value: int, line: str):
    edited = apply_changes(SOURCE, {name: value})
    assert line in edited.splitlines()
    assert discover(edited)[name].default == value


def test_only_the_edited_line_changes():
    edited = apply_changes(SOURCE, {"TOTAL_BATCH_SIZE": 2**18})
    changed = [(a, b) for a, b in zip(SOURCE.splitlines(), edited.splitlines(), strict=True) if a != b]
    assert len(changed) == 1
