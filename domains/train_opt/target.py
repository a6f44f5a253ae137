"""The editable target: discover the hyperparameters of a ``train.py`` and edit them safely.

Following the autoresearch contract, hyperparameters are module-level UPPER_CASE constants bound to
literals. They are found by parsing the file (never importing it), and edited by replacing the
literal's exact source span with ``repr`` of a type- and range-checked value, so an edit is always a
one-line diff and can never inject code.
"""

from __future__ import annotations

import ast
import difflib
import math
import re
from dataclasses import dataclass, replace
from typing import Any, Literal

from core.errors import UserError

Kind = Literal["int", "float", "str", "bool", "tuple"]
_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")


@dataclass(frozen=True)
class ParamSpec:
    """One editable constant: its type, default, sane range and how a step moves it."""

    name: str
    kind: Kind
    default: Any
    low: float | None = None
    high: float | None = None
    log: bool = False
    pow2: bool = False
    pattern: str | None = None
    length: int | None = None
    line: int = 0
    comment: str = ""
    editable: bool = True

    def describe(self) -> str:
        rng = f" in [{self.low:g}, {self.high:g}]" if self.low is not None and self.high is not None else ""
        extra = " (power of two)" if self.pow2 else ""
        pat = f" matching {self.pattern}" if self.pattern else ""
        note = f" — {self.comment}" if self.comment else ""
        return f"{self.name} = {self.default!r} ({self.kind}{rng}{extra}{pat}){note}"


# Sane ranges for the autoresearch names (and the bundled harness, which uses the same names).
# Anything else discovered in a train.py gets a generic range around its default.
KNOWN: dict[str, dict[str, Any]] = {
    "DEPTH": {"low": 1, "high": 32},
    "ASPECT_RATIO": {"low": 4, "high": 256},
    "HEAD_DIM": {"low": 8, "high": 256, "pow2": True},
    "N_EMBD": {"low": 16, "high": 4096},
    "WIDTH": {"low": 16, "high": 4096},
    "TOTAL_BATCH_SIZE": {"low": 256, "high": 2**22, "pow2": True},
    "DEVICE_BATCH_SIZE": {"low": 1, "high": 1024, "pow2": True},
    "SEQ_LEN": {"low": 16, "high": 8192, "pow2": True},
    "EMBEDDING_LR": {"low": 1e-5, "high": 10.0, "log": True},
    "UNEMBEDDING_LR": {"low": 1e-5, "high": 1.0, "log": True},
    "MATRIX_LR": {"low": 1e-5, "high": 1.0, "log": True},
    "SCALAR_LR": {"low": 1e-5, "high": 10.0, "log": True},
    "LEARNING_RATE": {"low": 1e-6, "high": 1.0, "log": True},
    "WEIGHT_DECAY": {"low": 0.0, "high": 1.0},
    "ADAM_BETAS": {"low": 0.5, "high": 0.9999},
    "WARMUP_RATIO": {"low": 0.0, "high": 1.0},
    "WARMDOWN_RATIO": {"low": 0.0, "high": 1.0},
    "FINAL_LR_FRAC": {"low": 0.0, "high": 1.0},
    "DROPOUT": {"low": 0.0, "high": 0.9},
    "GRAD_CLIP": {"low": 0.0, "high": 100.0},
    "WINDOW_PATTERN": {"pattern": r"^[SL]{1,16}$"},
}
# Constants a search should not touch by default: they change the experiment, not the model.
NOT_EDITABLE = {"SEED", "TIME_BUDGET", "EVAL_TOKENS", "MAX_SEQ_LEN", "VOCAB_SIZE"}


def _literal(node: ast.expr) -> Any:
    """Evaluate a literal, allowing simple integer arithmetic such as ``2**19`` or ``64 * 1024``."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Pow, ast.Mult, ast.Add, ast.Sub)):
        left, right = _literal(node.left), _literal(node.right)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (left, right)):
            raise ValueError("only integer arithmetic")
        if isinstance(node.op, ast.Pow):
            if right > 64:
                raise ValueError("exponent too large")
            return left**right
        return {ast.Mult: left * right, ast.Add: left + right, ast.Sub: left - right}[type(node.op)]
    return ast.literal_eval(node)


def _kind(value: Any) -> Kind | None:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, tuple) and value and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return "tuple"
    return None


def _spec(name: str, value: Any, kind: Kind, line: int, comment: str) -> ParamSpec:
    known = KNOWN.get(name, {})
    spec = ParamSpec(name=name, kind=kind, default=value, line=line, comment=comment,
                     editable=name not in NOT_EDITABLE and (kind != "str" or "pattern" in known))
    if known:
        return replace(spec, **known, length=len(value) if kind == "tuple" else None)
    if kind == "int":
        return replace(spec, low=1 if value > 0 else min(value * 4, -1), high=max(value * 4, 8))
    if kind == "float":
        if value > 0:
            return replace(spec, low=value / 10, high=value * 10, log=True)
        return replace(spec, low=-1.0, high=1.0)
    if kind == "tuple":
        return replace(spec, low=min(value) / 10 if min(value) > 0 else -1.0, high=max(value) * 10, length=len(value))
    return spec


def discover(source: str) -> dict[str, ParamSpec]:
    """Module-level UPPER_CASE constants bound to literals, in file order."""
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise UserError(f"train.py does not parse (line {exc.lineno}: {exc.msg}); fix the target file") from exc
    lines = source.splitlines()
    found: dict[str, ParamSpec] = {}
    for node in tree.body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            continue
        name = node.targets[0].id
        if not _NAME.match(name):
            continue
        try:
            value = _literal(node.value)
        except (ValueError, TypeError, SyntaxError):
            continue
        kind = _kind(value)
        if kind is None:
            continue
        rest = lines[node.lineno - 1].encode()[node.value.end_col_offset or 0:].decode(errors="replace")
        comment = rest.split("#", 1)[1].strip() if "#" in rest else ""
        found[name] = _spec(name, value, kind, node.lineno, comment)
    return found


def coerce(spec: ParamSpec, value: Any) -> Any:
    """Check ``value`` against ``spec`` and return it in the spec's type; raise ValueError if not."""
    if not spec.editable:
        raise ValueError(f"{spec.name} is not editable")
    if spec.kind == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"{spec.name} must be a bool")
        return value
    if spec.kind == "str":
        # exactly str: a subclass could render (repr) as anything, code included
        if type(value) is not str or (spec.pattern and not re.fullmatch(spec.pattern, value)):
            raise ValueError(f"{spec.name} must be a string matching {spec.pattern}")
        return value
    if spec.kind == "tuple":
        if not isinstance(value, (list, tuple)) or len(value) != spec.length:
            raise ValueError(f"{spec.name} must be a tuple of {spec.length} numbers")
        return tuple(_number(spec, v, float) for v in value)
    if spec.kind == "int":
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        result = _number(spec, value, int)
        if spec.pow2 and (result <= 0 or result & (result - 1)):
            raise ValueError(f"{spec.name} must be a power of two")
        return result
    return _number(spec, value, float)


def _number(spec: ParamSpec, value: Any, typ: type) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (typ is int and not isinstance(value, int)):
        raise ValueError(f"{spec.name} must be {'an int' if typ is int else 'a number'}, got {value!r}")
    try:
        value = typ(value)  # exactly int or float: a subclass could render (repr) as anything
    except OverflowError:  # e.g. 10**400 has no float
        raise ValueError(f"{spec.name} is out of range") from None
    if typ is float and not math.isfinite(value):
        raise ValueError(f"{spec.name} must be finite")
    if spec.low is not None and value < spec.low or spec.high is not None and value > spec.high:
        raise ValueError(f"{spec.name}={value!r} is outside [{spec.low:g}, {spec.high:g}]")
    return value


def apply_changes(source: str, changes: dict[str, Any], specs: dict[str, ParamSpec] | None = None) -> str:
    """Return ``source`` with each named constant's literal replaced by ``repr`` of its new value."""
    specs = specs or discover(source)
    unknown = sorted(set(changes) - set(specs))
    if unknown:
        raise ValueError(f"unknown hyperparameter(s) {', '.join(unknown)}; known: {', '.join(specs)}")
    values = {name: coerce(specs[name], value) for name, value in changes.items()}
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    edits = []
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name in values:
                if node.value.lineno != node.value.end_lineno:
                    raise ValueError(f"{name} spans several lines; only one-line constants can be edited")
                edits.append((node.value.lineno - 1, node.value.col_offset, node.value.end_col_offset,
                              render_like(node.value, name, values[name])))
    for line_no, start, end, text in sorted(edits, reverse=True):
        raw = lines[line_no].encode()
        lines[line_no] = (raw[:start] + text.encode() + raw[end:]).decode()
    return "".join(lines)


def render(name: str, value: Any) -> str:
    """``repr(value)``, checked to be a one-line literal that reads back as ``value``: the last guard
    between a value and the text of train.py."""
    text = repr(value)
    try:
        ok = "\n" not in text and ast.literal_eval(text) == value
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        ok = False
    if not ok:
        raise ValueError(f"{name}: {text[:80]!r} is not a one-line literal of its value")
    return text


def render_like(old: ast.expr, name: str, value: Any) -> str:
    """The new value written in the form of the old expression when it fits — ``2**19`` becomes
    ``2**18``, ``64 * 1024`` becomes ``32 * 1024`` — so a one-line diff reads as the author wrote it;
    otherwise :func:`render`. Integer arithmetic forms only; the result must evaluate to ``value``."""
    text = None
    if isinstance(old, ast.BinOp) and type(value) is int and value > 0:
        left, right = old.left, old.right
        base = left.value if isinstance(left, ast.Constant) and type(left.value) is int else None
        unit = right.value if isinstance(right, ast.Constant) and type(right.value) is int else None
        if isinstance(old.op, ast.Pow) and base and base >= 2:
            exponent = round(math.log(value, base))
            if exponent >= 0 and base**exponent == value:
                text = f"{base}**{exponent}"
        elif isinstance(old.op, ast.Mult) and unit and unit > 0 and value % unit == 0:
            text = f"{value // unit} * {unit}"
    if text is not None:
        try:
            if _literal(ast.parse(text, mode="eval").body) == value:
                return text
        except (ValueError, SyntaxError, TypeError):
            pass
    return render(name, value)


def diff(old: str, new: str, name: str = "train.py") -> str:
    return "".join(difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True),
                                        f"a/{name}", f"b/{name}", n=0))


def values(source: str) -> dict[str, Any]:
    return {name: spec.default for name, spec in discover(source).items()}


def direction(spec: ParamSpec, old: Any, new: Any) -> str:
    if spec.kind in ("int", "float"):
        return "up" if new > old else "down"
    if spec.kind == "tuple":
        return "up" if sum(new) > sum(old) else "down"
    return "set"


def region(specs: dict[str, ParamSpec], current: dict[str, Any], changes: dict[str, Any]) -> str:
    """The search region a change lives in, e.g. ``"DEPTH:down+MATRIX_LR:up"`` (tabu lists key on it)."""
    parts = [f"{n}:{direction(specs[n], current.get(n), v)}" for n, v in sorted(changes.items()) if n in specs]
    return "+".join(parts)
