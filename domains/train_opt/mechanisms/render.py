"""Render a template into generated mechanism source.

The offline Level-2 designer does not write code from scratch: it picks a template from
:data:`~domains.train_opt.mechanisms.TEMPLATES` and sets its parameters. The result is still
*source*, and it goes through the same hot-loader (policy check, contract check, import) as code an
LLM wrote, so the two paths cannot drift apart.

Only the values of the module-level ``PARAMS = {...}`` literal change. They are located with
:mod:`ast` and replaced in place with ``repr`` of the new value, so the rest of the file (docstring,
the inline comment on each knob) is kept byte for byte. Values are type-checked against the
defaults: an ``int`` default takes an ``int``, a ``float`` default an ``int`` or a finite ``float``
(rendered as a float), a ``bool`` only a ``bool``, a ``str`` only a ``str``.
"""

import ast
import math
from pathlib import Path
from typing import Any

from domains.train_opt.mechanisms import TEMPLATES

_FOLDER = Path(__file__).parent


def _info(name: str) -> dict[str, Any]:
    if name not in TEMPLATES:
        raise ValueError(f"unknown template {name!r}; known: {', '.join(sorted(TEMPLATES))}")
    return TEMPLATES[name]


def template_source(name: str) -> str:
    """The template module's source text, exactly as shipped."""
    return (_FOLDER / _info(name)["module"]).read_text(encoding="utf-8")


def _params_node(tree: ast.Module, name: str) -> ast.Dict:
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name) and node.targets[0].id == "PARAMS"
                and isinstance(node.value, ast.Dict)):
            return node.value
    raise ValueError(f"template {name!r} has no module-level PARAMS = {{...}} dict literal")


def _checked(name: str, key: str, value: Any, default: Any) -> Any:
    kind = type(default)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if type(value) is not kind:
        raise ValueError(f"template {name!r} param {key!r} must be {kind.__name__} like {default!r}, "
                         f"got {type(value).__name__} {value!r}")
    if kind is float and not math.isfinite(value):
        raise ValueError(f"template {name!r} param {key!r} must be finite, got {value!r}")
    return value


def render_template(name: str, params: dict[str, Any] | None = None) -> str:
    """The source of template ``name`` with ``params`` written over its ``PARAMS`` defaults.

    Raises ``ValueError`` (one line) for an unknown template, an unknown parameter or a value whose
    type does not match the default's.
    """
    source = template_source(name)
    node = _params_node(ast.parse(source), name)
    defaults = ast.literal_eval(node)
    params = dict(params or {})
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise ValueError(f"template {name!r} has no param(s) {', '.join(unknown)}; "
                         f"known: {', '.join(sorted(defaults))}")
    merged = {key: _checked(name, key, params[key], default) if key in params else default
              for key, default in defaults.items()}

    # ast offsets are UTF-8 byte columns: splice bytes, last value first so earlier offsets hold.
    data = source.encode("utf-8")
    line_starts = [0]
    for line in data.splitlines(keepends=True):
        line_starts.append(line_starts[-1] + len(line))
    edits = []
    for key_node, value_node in zip(node.keys, node.values, strict=True):
        key = ast.literal_eval(key_node)
        if key in params:
            start = line_starts[value_node.lineno - 1] + value_node.col_offset
            end = line_starts[value_node.end_lineno - 1] + value_node.end_col_offset
            edits.append((start, end, repr(merged[key]).encode("utf-8")))
    for start, end, text in sorted(edits, reverse=True):
        data = data[:start] + text + data[end:]
    rendered = data.decode("utf-8")

    check = ast.literal_eval(_params_node(ast.parse(rendered), name))
    if check != merged:  # a template bug (e.g. a duplicated key), not a caller mistake
        raise RuntimeError(f"rendering template {name!r} produced PARAMS {check!r}, expected {merged!r}")
    return rendered
