"""The Domain protocol: what a domain gives the one bilevel schedule (:mod:`core.schedule`).

A domain is what the loop optimizes (a training script, an essay, any script that prints a
metric). The schedule owns everything else — the run directory, clients, baseline, cycles, Level
1.5 and Level 2 at their slots, keep/revert of both outer levels, budgets, resume, the summary
file. A domain provides, in one class:

========================  =========================================================================
``name``, ``Settings``    the run-dir prefix and a :class:`~core.settings.RunSettings` subclass
``check`` / ``prepare``   refuse bad inputs before a run directory exists; copy inputs into a new one
``__init__(ctx)``         build the Level-1 controllers (``self.loops``) from the run's clients
``config_level()``        Level 1.5: a :class:`ConfigLevel` (its candidate is a config patch), or None
``level2()``              Level 2: a designer (``Proposer``) and an installer per plug-in kind, or None
``summarize()``           the run's figures, from the journal (report pieces)
``finish()``              write the best artifacts when the run ends
========================  =========================================================================

Domains import only ``core``; a test reads the import graph.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from core.inner_loop import InnerLoopController
from core.plugins import Proposer
from core.records import TrialRecord
from core.settings import RunSettings
from core.state import RunDir

if TYPE_CHECKING:
    from core.level2 import Installer


@dataclass
class RunContext:
    """What a domain is built from: the run directory, its settings and one client per level
    (``inner``, ``outer``, ``mechanism`` and any the domain's settings name, e.g. ``judge``)."""

    run: RunDir
    settings: Any
    clients: dict[str, Any]


@dataclass
class Level2Parts:
    """Level 2 of a domain: who designs a plug-in and how one is put into the running loop."""

    designer: Proposer
    installer: Installer


class ConfigLevel(ABC):
    """Level 1.5 of a domain: the inner loop's search configuration and patches to it.

    After each cycle but the last the schedule calls :meth:`patch`, which asks the analyzer and
    journals exactly one event: ``applied`` (holding the new configuration) or ``rejected``. The
    next cycle runs under it; when that cycle ends the schedule scores the patch (the cycle's gain
    against the cycle before) and keeps it or reverts it — journaled as ``level15_verdict`` with the
    restored configuration — the same way in every domain.
    """

    applied: ClassVar[str]  # journal event type of an applied patch
    rejected: ClassVar[str]  # journal event type of a rejected one

    @abstractmethod
    def initial(self) -> Any:
        """The configuration before any patch."""

    @abstractmethod
    def config_of(self, event: dict[str, Any]) -> Any:
        """The configuration in force after an ``applied`` event."""

    def dump(self, config: Any) -> Any:
        """JSON form of a configuration (for a verdict's ``restored``)."""
        return config.model_dump(mode="json") if hasattr(config, "model_dump") else config

    def load(self, data: Any) -> Any:
        """Inverse of :meth:`dump`."""
        return data

    @abstractmethod
    def patch(self, cycle: int, config: Any) -> None:
        """Analyze the run after ``cycle`` and journal one ``applied`` or ``rejected`` event."""

    @abstractmethod
    def install(self, config: Any) -> None:
        """Make ``config`` the one the inner loop(s) run under."""


class Domain(ABC):
    """One optimization problem. Instantiated once per session (start or resume), after the run
    directory holds its inputs; see the module docstring for what each member is for."""

    name: ClassVar[str]
    Settings: ClassVar[type[RunSettings]] = RunSettings
    loops: dict[str, InnerLoopController]

    @classmethod
    def register_offline(cls) -> None:
        """Register the offline stand-in's handlers for this domain's request purposes."""
        return None

    @classmethod
    def check(cls, settings: Any) -> None:
        """Refuse inputs that cannot work (a missing file, a flag that cannot apply) with a
        :class:`~core.errors.UserError`, before any run directory is created."""
        return None

    @classmethod
    def prepare(cls, settings: Any, run: RunDir) -> dict[str, Any]:
        """Copy the run's inputs into a new run directory; return extra ``run_started`` fields."""
        return {}

    @abstractmethod
    def __init__(self, ctx: RunContext) -> None: ...

    def config_level(self) -> ConfigLevel | None:
        return None

    def level2(self) -> Level2Parts | None:
        return None

    def baseline_error(self, loop: str, record: TrialRecord) -> str:
        """The one-line message when a loop's baseline did not run (the run cannot start)."""
        return f"the baseline of {loop} failed ({record.status.value}: {record.error})"

    def cycle_info(self, cycle: int) -> dict[str, Any]:
        """Extra fields for the cycle's ``cycle_end`` event."""
        return {}

    def finish(self) -> None:  # noqa: B027 - optional
        """Write the best artifacts (called whenever the run ends, finished or stopped)."""

    @abstractmethod
    def summarize(self) -> dict[str, Any]:
        """The run's figures from its journal; the schedule adds ``stopped`` and ``complete``."""
