"""Templates: real, linted Python modules whose knobs are a module-level ``PARAMS = {...}`` literal.

Level 2's offline designers do not write code from scratch: they pick a template (a library
mechanism in :mod:`core.mechanisms`, an article stage in ``domains/article_opt/stage_templates/``)
and set its parameters with :func:`render`. The result is still *source*, and it goes through the
same loader (policy lint, sandboxed worker, contract check) as code an LLM wrote, so the two paths
cannot drift apart. A template is an ordinary module: it is imported, linted and tested as is.

Only the values of ``PARAMS`` change. They are located with :mod:`ast` and replaced in place with
``repr`` of the new value, so the rest of the file (docstring, the inline comment on each knob) is
kept byte for byte. Values are type-checked against the defaults: an ``int`` default takes an
``int``, a ``float`` default an ``int`` or a finite ``float`` (rendered as a float), a ``bool`` only
a ``bool``, a ``str`` only a ``str``.
"""

import ast
import math
from pathlib import Path
from typing import Any


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


def declared_params(source: str, name: str = "template") -> dict[str, Any]:
    """The ``PARAMS`` defaults a template declares."""
    return ast.literal_eval(_params_node(ast.parse(source), name))


def render(path: Path, params: dict[str, Any] | None = None, *, name: str | None = None) -> str:
    """The source of the template module at ``path`` with ``params`` written over its ``PARAMS``.

    Raises ``ValueError`` (one line) for a template without ``PARAMS``, an unknown parameter or a
    value whose type does not match the default's. ``name`` is the template's name in messages.
    """
    path = Path(path)
    name = name or path.stem
    source = path.read_text(encoding="utf-8")
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
