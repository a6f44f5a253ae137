"""Persistent memory across runs on the same target: what worked before is tried first.

Diagnosis it addresses — *amnesia*: every run on a target starts from nothing, although earlier runs
on the very same target already found better configurations.

How: one JSON file per target (``path``; by default :func:`default_path` under the user's cache,
``$XDG_CACHE_HOME/bilevel-autoresearch/memory/<target digest>.json``). Each entry is one run's best
keep, with provenance: ``run_id``, ``date`` (UTC), ``changes`` (the kept configuration as changes to
the target's original constants), ``score``, ``baseline`` (that run's baseline score), ``iteration``.

- ``observe`` writes an entry whenever a record is kept (so a run that is killed still leaves what it
  found): the run's entry is replaced when the new keep is its best so far. The file keeps the
  ``max_entries`` best entries, is rewritten atomically (temp file + ``os.replace``) and a corrupt
  or foreign file is set aside (``.corrupt``) rather than trusted or overwritten silently.
- ``guidance`` (while the run is young: iteration ≤ ``horizon``) tells the proposer what earlier
  runs found — the ``top`` entries, best first, with their provenance — and prefers the parameters
  those entries changed.
- ``propose`` (``replay`` > 0): on the first iterations after the baseline, proposes the best
  remembered configurations themselves, at most ``replay`` of them, each once, skipping any already
  measured in this run. A remembered configuration is a set of changes to the same original file,
  so it applies as is.

Opt-in: nothing is read or written unless the mechanism is attached (train_opt: ``--memory``).
Library only — it is **not** a Level-2 template: generated mechanisms run in a sandboxed worker
that cannot write outside its own temporary folder, so a memory that outlives the run cannot live
there. On resume, ``replay`` rebuilds the run's own state from the journal without writing again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.mechanism import Mechanism, merge_params
from core.records import Constraints, Guidance, Proposal, ProposalContext, Status, TrialRecord

log = logging.getLogger(__name__)

PARAMS = {
    "path": "",  # the memory file (required: default_path(target digest) gives the usual place)
    "run_id": "",  # this run's id, written with every entry
    "target": "",  # a short description of the target (e.g. its path), written in the file
    "horizon": 3,  # guidance is given on iterations 1..horizon
    "top": 3,  # at most this many remembered entries are shown
    "replay": 1,  # propose the best `replay` remembered configurations at the start (0 = guidance only)
    "max_entries": 20,  # the file keeps the best this many entries
}
FORMAT = 1


def target_digest(text: str) -> str:
    """The key of a target: a digest of its editable file's original text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def default_path(digest: str) -> Path:
    """``$XDG_CACHE_HOME/bilevel-autoresearch/memory/<digest>.json`` (``~/.cache`` when unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "bilevel-autoresearch" / "memory" / f"{digest}.json"


class MemoryMechanism(Mechanism):
    """Remembers each run's best keep on a target and replays the best remembered ones first."""

    name = "memory"
    description = ("Persistent memory across runs on the same target: earlier runs' best keeps (with provenance) "
                   "are shown and tried first; this run's keeps are written back.")

    def __init__(self, **params: Any) -> None:
        merged = merge_params(PARAMS, params)
        if not merged["path"]:
            raise ValueError("parameter 'path' is required (see core.mechanisms.memory.default_path)")
        for key in ("horizon", "top", "replay", "max_entries"):
            if merged[key] < 0 or (key in ("top", "max_entries") and merged[key] < 1):
                raise ValueError(f"parameter {key!r} is out of range")
        super().__init__(**merged)
        self.path = Path(merged["path"]).expanduser()
        self.changes: dict[str, Any] = {}  # the incumbent as changes to the original
        self.baseline: float | None = None
        self.direction = "minimize"
        self.remembered = self._read()  # what earlier runs left, read once at the start of this one

    # -- the file ----------------------------------------------------------------------------------
    def _read(self) -> list[dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            log.warning("memory file %s is unreadable (%s); setting it aside", self.path, exc)
            self._set_aside()
            return []
        entries = data.get("entries") if isinstance(data, dict) and data.get("format") == FORMAT else None
        if not isinstance(entries, list):
            log.warning("memory file %s is not a memory file; setting it aside", self.path)
            self._set_aside()
            return []
        ok = [e for e in entries if isinstance(e, dict) and isinstance(e.get("changes"), dict)
              and isinstance(e.get("score"), (int, float)) and e.get("run_id") != self.params["run_id"]]
        return ok

    def _set_aside(self) -> None:
        try:
            os.replace(self.path, self.path.with_suffix(".corrupt"))
        except OSError:
            pass

    def _better(self, a: float, b: float) -> bool:
        return a < b if self.direction == "minimize" else a > b

    def _write(self, entry: dict[str, Any]) -> None:
        current: list[dict[str, Any]] = []
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if isinstance(data, dict) and data.get("format") == FORMAT and isinstance(data.get("entries"), list):
                current = [e for e in data["entries"] if isinstance(e, dict)]
        except (OSError, ValueError):
            current = []
        mine = next((e for e in current if e.get("run_id") == entry["run_id"]), None)
        if mine is not None and isinstance(mine.get("score"), (int, float)) and not self._better(entry["score"], mine["score"]):
            return
        others = [e for e in current if e.get("run_id") != entry["run_id"]]
        sign = 1.0 if self.direction == "minimize" else -1.0
        entries = sorted([*others, entry], key=lambda e: sign * float(e.get("score", 0.0)))[: self.params["max_entries"]]
        body = {"format": FORMAT, "target": self.params["target"], "direction": self.direction, "entries": entries}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".memory-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(body, fh, indent=1, sort_keys=True, default=str)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    # -- hooks -------------------------------------------------------------------------------------
    def best(self) -> list[dict[str, Any]]:
        """Remembered entries that beat their own baseline, best first."""
        sign = 1.0 if self.direction == "minimize" else -1.0
        useful = [e for e in self.remembered if e["changes"]
                  and (e.get("baseline") is None or self._better(float(e["score"]), float(e["baseline"])))]
        return sorted(useful, key=lambda e: sign * float(e["score"]))

    def guidance(self, ctx: ProposalContext) -> Guidance | None:
        self.direction = ctx.direction
        entries = self.best()[: self.params["top"]]
        if ctx.iteration > self.params["horizon"] or not entries:
            return None
        lines = []
        for e in entries:
            changes = ", ".join(f"{k}={v!r}" for k, v in sorted(e["changes"].items()))
            was = f" from baseline {e['baseline']:g}" if isinstance(e.get("baseline"), (int, float)) else ""
            lines.append(f"run {e.get('run_id') or '?'} ({str(e.get('date', '?'))[:10]}) reached {e['score']:g}{was} with {changes}")
        prefer = tuple(dict.fromkeys(k for e in entries for k in sorted(e["changes"])))
        return Guidance(text="Memory of earlier runs on this target: " + "; ".join(lines) + ".",
                        constraints=Constraints(prefer_params=prefer))

    def propose(self, ctx: ProposalContext) -> Proposal | None:
        self.direction = ctx.direction
        if self.params["replay"] < 1 or ctx.iteration > self.params["horizon"]:
            return None
        tried = [dict(r.proposal.changes) for r in ctx.history if r.proposal is not None]
        replayed = sum(1 for r in ctx.history if r.proposal is not None and r.proposal.hypothesis.startswith("[memory]"))
        if replayed >= self.params["replay"]:
            return None
        incumbent = _incumbent_changes(ctx.history)
        for entry in self.best():
            changes = {k: v for k, v in entry["changes"].items() if incumbent.get(k) != v}
            if not changes or changes in tried:
                continue
            words = ", ".join(f"{k}={v!r}" for k, v in sorted(changes.items()))
            return Proposal(changes=changes, region="+".join(f"{k}:set" for k in sorted(changes)),
                            hypothesis=f"[memory] run {entry.get('run_id') or '?'} ({str(entry.get('date', '?'))[:10]}) "
                                       f"reached {entry['score']:g} on this target with {words}")
        return None

    def observe(self, record: TrialRecord) -> None:
        self._follow(record)
        if record.status is not Status.KEEP or record.score is None or record.proposal is None:
            return
        if record.proposal.is_baseline or not self.changes:
            return
        entry = {"run_id": self.params["run_id"], "date": datetime.now(UTC).isoformat(timespec="seconds"),
                 "changes": dict(self.changes), "score": record.score, "baseline": self.baseline,
                 "iteration": record.iteration}
        try:
            self._write(entry)
        except OSError as exc:  # a full or read-only cache must not stop the run
            log.warning("could not write memory file %s: %s", self.path, exc)

    def _follow(self, record: TrialRecord) -> None:
        if record.proposal is None or record.status is not Status.KEEP:
            return
        if record.proposal.is_baseline:
            self.baseline = record.score
        else:
            self.changes.update(record.proposal.changes)

    def replay(self, history: tuple[TrialRecord, ...]) -> None:
        """On resume: rebuild this run's state; what it kept is already in the file."""
        self.changes, self.baseline = {}, None
        for record in history:
            self._follow(record)


def _incumbent_changes(history: tuple[TrialRecord, ...]) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    for record in history:
        if record.status is Status.KEEP and record.proposal is not None and not record.proposal.is_baseline:
            changes.update(record.proposal.changes)
    return changes
