"""Editable constants of a Python script: found by parsing, changed by replacing one literal.

The autoresearch convention, for any script: knobs are module-level ``UPPER_CASE = literal``
assignments (an ``int``, ``float`` or ``bool``; an inline comment says what it is). They are found
with :mod:`ast` (the file is never imported) and edited by replacing the literal's exact source span
with ``repr`` of a type-checked value, so an edit is always a one-line diff and cannot inject code.
"""

from __future__ import annotations

import ast
import difflib
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import UserError

_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")


@dataclass(frozen=True)
class Constant:
    """One editable constant: its name, type, value in the original file and its comment."""

    name: str
    kind: type
    default: Any
    line: int
    comment: str = ""

    def describe(self) -> str:
        return f"{self.name} = {self.default!r} ({self.kind.__name__})" + (f" — {self.comment}" if self.comment else "")


def _literal(node: ast.expr) -> Any:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant):
        value = node.operand.value
        return -value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    return node.value if isinstance(node, ast.Constant) else None


def _assignments(tree: ast.Module) -> list[tuple[str, ast.expr]]:
    found = []
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            found.append((node.targets[0].id, node.value))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            found.append((node.target.id, node.value))
    return found


def discover(source: str, *, filename: str = "the script") -> dict[str, Constant]:
    """Every module-level UPPER_CASE constant bound to an int, float or bool literal."""
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise UserError(f"{filename} does not parse (line {exc.lineno}: {exc.msg}); fix it before searching it") from None
    lines = source.splitlines()
    found: dict[str, Constant] = {}
    for name, value_node in _assignments(tree):
        value = _literal(value_node)
        if not _NAME.match(name) or value is None or not isinstance(value, (int, float, bool)):
            continue
        text = lines[value_node.lineno - 1]
        comment = text.split("#", 1)[1].strip() if "#" in text else ""
        found[name] = Constant(name=name, kind=type(value), default=value, line=value_node.lineno, comment=comment)
    return found


def coerce(constant: Constant, value: Any) -> Any:
    """``value`` as the constant's type; ``ValueError`` (one line) when it cannot be."""
    kind = constant.kind
    if kind is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{constant.name} is a bool; got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{constant.name} is a number ({kind.__name__}); got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{constant.name} must be finite; got {value!r}")
    if kind is int:
        if float(value) != int(value):
            raise ValueError(f"{constant.name} is an int; got {value!r}")
        return int(value)
    return float(value)


def apply_changes(source: str, changes: dict[str, Any], constants: dict[str, Constant] | None = None) -> str:
    """``source`` with each named constant's literal replaced by ``repr`` of its checked new value."""
    constants = constants if constants is not None else discover(source)
    unknown = sorted(set(changes) - set(constants))
    if unknown:
        raise ValueError(f"unknown constant(s) {', '.join(unknown)}; editable: {', '.join(sorted(constants))}")
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    edits = []
    for name, node in _assignments(tree):
        if name in changes and name in constants:
            if node.lineno != node.end_lineno:
                raise ValueError(f"{name} spans several lines; write it on one line to make it editable")
            edits.append((node.lineno - 1, node.col_offset, node.end_col_offset, repr(coerce(constants[name], changes[name]))))
    for line, start, end, text in sorted(edits, reverse=True):
        raw = lines[line].encode("utf-8")
        lines[line] = (raw[:start] + text.encode("utf-8") + raw[end:]).decode("utf-8")
    return "".join(lines)


def values(source: str) -> dict[str, Any]:
    return {name: c.default for name, c in discover(source).items()}


def diff(old: str, new: str, name: str = "script") -> str:
    return "".join(difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True),
                                        fromfile=f"{name} (parent)", tofile=f"{name} (candidate)"))


def measured_changes(history: Iterable[Any], run_dir: Path, current: dict[str, Any], *,
                     read: Callable[[str], dict[str, Any]] = values,
                     max_changes: int | None = None) -> list[dict[str, Any]]:
    """Each configuration already measured (a record's artifact), as its changes from ``current``,
    deduplicated; the offline researchers are told not to propose these again. ``read`` gives a
    script's constants (a domain's own parser); ``max_changes`` drops configurations further away."""
    out: list[dict[str, Any]] = []
    for record in history:
        path = run_dir / record.artifact if record.artifact else None
        if path is None or not path.is_file():
            continue
        try:
            found = read(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, SyntaxError):
            continue
        diff = {k: v for k, v in found.items() if k in current and v != current[k]}
        if diff and (max_changes is None or len(diff) <= max_changes) and diff not in out:
            out.append(diff)
    return out
