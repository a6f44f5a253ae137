"""train_opt's side of the mechanism library: what the generic mechanisms need from this domain.

* :func:`space_dims` — the parameter space of a ``train.py`` (its editable constants, their ranges
  and original values) in the form the proposing templates read (:class:`core.mechanism.ParamSpace`;
  rendered with :func:`core.mechanisms.space_param`). Level 2 fills it into a template's ``space``
  parameter, so a surrogate or pattern-search design proposes values train_opt will accept.
* :func:`memory_mechanism` — the persistent memory (``--memory``) for this target: keyed by a digest
  of the original ``train.py``, stored in the user's cache.
* :mod:`.early_stop` — the learning-curve rule that stops a doomed trial (``--early-stop``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from core.mechanisms.memory import MemoryMechanism, default_path, target_digest
from domains.train_opt import target as tgt

_CHOICES = re.compile(r"^\^\((.+)\)\$$")


def space_dims(specs: dict[str, tgt.ParamSpec], values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The editable constants as ``ParamSpace`` dimensions, with ``values`` as their starting values.

    Numbers need both bounds; a power-of-two int is ``pow2``; a float is on a log scale when its
    spec says so or its range spans more than ×20; a string whose pattern is a plain alternation
    (``^(L|SL|SSL)$``) is a choice. Tuples and free-form strings are left to the proposer."""
    dims: dict[str, dict[str, Any]] = {}
    for name, spec in specs.items():
        value = values.get(name, spec.default)
        if not spec.editable or value is None:
            continue
        if spec.kind in ("int", "float") and spec.low is not None and spec.high is not None:
            if spec.kind == "int" and spec.pow2 and spec.low > 0:
                dims[name] = {"kind": "pow2", "low": int(spec.low), "high": int(spec.high), "value": value}
            elif spec.kind == "int":
                dims[name] = {"kind": "int", "low": int(spec.low), "high": int(spec.high), "value": value}
            else:
                log = bool(spec.log) or (spec.low > 0 and spec.high / spec.low > 20)
                dims[name] = {"kind": "float", "low": float(spec.low), "high": float(spec.high), "log": log and spec.low > 0,
                              "value": value}
        elif spec.kind == "bool":
            dims[name] = {"kind": "bool", "value": value}
        elif spec.kind == "str" and spec.pattern and (match := _CHOICES.match(spec.pattern)):
            options = match.group(1).split("|")
            if all(re.fullmatch(r"[A-Za-z0-9_.-]+", o) for o in options) and value in options:
                dims[name] = {"kind": "choice", "choices": options, "value": value}
    return dims


def memory_mechanism(original: Path, run_id: str, *, target: str = "") -> MemoryMechanism:
    """The ``--memory`` mechanism of a run whose original ``train.py`` is ``original``."""
    digest = target_digest(original.read_text(encoding="utf-8"))
    return MemoryMechanism(path=str(default_path(digest)), run_id=run_id, target=target or str(original))
