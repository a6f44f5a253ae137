"""The library of generic search mechanisms, and the templates Level 2 designs from.

They key only on what every domain's records carry (``Proposal.region``, ``changes``, statuses,
scores), so any domain — and Level 2's own loop — attaches them unchanged. Each module plays three
parts:

1. an attachable library mechanism (``build("tabu", tenure=4)`` → attach it to any controller);
2. a *template*: an offline Level-2 designer picks one by the diagnosis it ``addresses``, sets its
   ``PARAMS`` with :func:`render_template` and hot-loads the rendered source like any generated
   mechanism;
3. a worked example shown to an LLM designer (:func:`template_source`).

So every template module obeys the generated-code policy: it imports only ``core.mechanism``,
``core.records`` and allow-listed stdlib modules, defines exactly one public ``Mechanism`` subclass,
and keeps its knobs in a module-level ``PARAMS`` dict literal. The proposing templates (surrogate,
pattern, multiscale) share :class:`core.mechanism.ParamSpace` and read the parameter space from
their ``space`` parameter (JSON a domain fills in: :func:`space_param`).

One library mechanism is not a template: ``memory`` (:mod:`core.mechanisms.memory`) keeps a file in
the user's cache across runs, which a sandboxed worker cannot write; it is attached in-process
(train_opt: ``--memory``) and is in ``LIBRARY`` but not in ``TEMPLATES``.

``TEMPLATES`` maps a template name to its metadata: ``module`` (file name in this folder),
``class_name``, ``description``, ``addresses`` (the short diagnosis tag a designer matches a trace
against), ``diagnosis`` (the symptom in words), ``hooks`` (the hooks it overrides) and ``params``
(the defaults, read from the module's ``PARAMS``). What a template was *measured* to do is a
domain's knowledge, not the library's: train_opt's designer menu adds it
(:mod:`domains.train_opt.mechanism_research`).
"""

import json
from pathlib import Path
from typing import Any

from core import templates
from core.mechanism import HOOKS, Mechanism, ParamSpace
from core.mechanisms import bandit, multiscale, orthogonal, pattern, step_size, surrogate, tabu
from core.mechanisms.bandit import BanditMechanism
from core.mechanisms.memory import MemoryMechanism
from core.mechanisms.multiscale import MultiScaleBanditMechanism
from core.mechanisms.orthogonal import OrthogonalExplorationMechanism
from core.mechanisms.pattern import PatternSearchMechanism
from core.mechanisms.step_size import StepSizeMechanism
from core.mechanisms.surrogate import SurrogateMechanism
from core.mechanisms.tabu import TabuMechanism

__all__ = [
    "LIBRARY",
    "TEMPLATES",
    "BanditMechanism",
    "MemoryMechanism",
    "MultiScaleBanditMechanism",
    "OrthogonalExplorationMechanism",
    "PatternSearchMechanism",
    "StepSizeMechanism",
    "SurrogateMechanism",
    "TabuMechanism",
    "build",
    "render_template",
    "space_param",
    "template_source",
]

_FOLDER = Path(__file__).parent

LIBRARY: dict[str, type[Mechanism]] = {
    cls.name: cls
    for cls in (TabuMechanism, BanditMechanism, OrthogonalExplorationMechanism, StepSizeMechanism,
                SurrogateMechanism, PatternSearchMechanism, MultiScaleBanditMechanism, MemoryMechanism)
}

# The proposing templates answer the symptoms the older ones do, with a stronger remedy (they make
# the move themselves); a designer picks among the templates that address a diagnosis. "scale" is
# not computed by train_opt's diagnosis: the multi-scale bandit did not beat step_size on the suite
# (benchmarks/mechanisms_suite.py), so only a designer that asks for it by name gets it.
_DIAGNOSES = {
    "tabu": ("repeats", "the search re-proposes the same regions although their last try was not kept"),
    "orthogonal": ("narrow", "the search concentrates on a few parameters and keeps failing there"),
    "bandit": ("plateau", "no keeps for a while: spend the tries where they have paid before"),
    "step_size": ("crashes/overshoot", "many crashes or large discards: moves overshoot the good region"),
    "surrogate": ("plateau", "no keeps for a while although the measured trials already show which way is "
                             "better: let a model of them pick the next candidate"),
    "pattern": ("repeats", "the proposer retries and abandons directions at random: follow what paid "
                           "and halve the step where both directions failed"),
    "multiscale": ("scale", "moves are the wrong size (overshoot or crawl): learn per parameter "
                            "whether small or large moves pay"),
}
_MODULES = {"tabu": tabu, "bandit": bandit, "orthogonal": orthogonal, "step_size": step_size,
            "surrogate": surrogate, "pattern": pattern, "multiscale": multiscale}


def _hooks(cls: type[Mechanism]) -> tuple[str, ...]:
    return tuple(h for h in HOOKS if getattr(cls, h) is not getattr(Mechanism, h))


TEMPLATES: dict[str, dict[str, Any]] = {
    name: {
        "module": f"{name}.py",
        "class_name": LIBRARY[name].__name__,
        "description": LIBRARY[name].description,
        "addresses": addresses,
        "diagnosis": diagnosis,
        "hooks": _hooks(LIBRARY[name]),
        "params": dict(_MODULES[name].PARAMS),
    }
    for name, (addresses, diagnosis) in _DIAGNOSES.items()
}


def _path(name: str) -> Path:
    if name not in TEMPLATES:
        raise ValueError(f"unknown template {name!r}; known: {', '.join(sorted(TEMPLATES))}")
    return _FOLDER / TEMPLATES[name]["module"]


def template_source(name: str) -> str:
    """The template module's source text, exactly as shipped."""
    return _path(name).read_text(encoding="utf-8")


def render_template(name: str, params: dict[str, Any] | None = None) -> str:
    """The source of mechanism template ``name`` with ``params`` over its ``PARAMS`` defaults."""
    return templates.render(_path(name), params, name=name)


def space_param(dims: dict[str, dict[str, Any]]) -> str:
    """The ``space`` parameter of the proposing templates: ``dims`` (name → ``kind``, ``low``,
    ``high``, ``log``, ``choices``, ``value``; see :class:`~core.mechanism.ParamSpace`) as compact,
    validated JSON."""
    ParamSpace(dims)
    return json.dumps(dims, sort_keys=True, separators=(",", ":"))


def build(name: str, **params: Any) -> Mechanism:
    """A library mechanism by template name, with ``params`` over its defaults."""
    if name not in LIBRARY:
        raise ValueError(f"unknown mechanism {name!r}; known: {', '.join(sorted(LIBRARY))}")
    return LIBRARY[name](**params)
