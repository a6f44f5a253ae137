"""Cassettes: every answered call recorded as one JSON line, and provider ``replay`` reading them.

A line is ``{request_hash, purpose, request: {model, messages, schema}, response, usage,
latency_s}``. Keys and auth headers are never part of a request record, so never written. The hash
covers (purpose, messages, schema name) only — not the provider or model — so a cassette recorded
with one provider replays under ``replay`` unchanged.

Lines are appended with ``fsync``; a torn last line (a crash mid-write) is ignored on reading and
cut off before the next append (a complete last line missing only its newline gets it back). A bad
line anywhere else is corruption and raised.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections import defaultdict, deque
from pathlib import Path
from typing import Any

from core.errors import JournalCorruptError, ReplayMissError
from core.llm.base import LLMReply, LLMRequest, Message
from core.records import canonical_json

logger = logging.getLogger(__name__)


def request_hash(purpose: str, messages: tuple[Message, ...] | list[Message], schema_name: str | None) -> str:
    body = canonical_json({"purpose": purpose, "messages": list(messages), "schema": schema_name})
    return hashlib.sha256(body.encode("utf-8")).hexdigest()[:16]


def read_cassette(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Entries of a cassette in order, tolerating a torn last line."""
    path = Path(path)
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    last = max((i for i, line in enumerate(lines, start=1) if line.strip()), default=0)
    entries: list[dict[str, Any]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        entry = _parse_entry(line)
        if entry is None:
            if number == last and not raw.endswith(b"\n"):
                logger.warning("cassette %s: ignoring torn last line %d", path, number)
                break
            raise JournalCorruptError(f"cassette {path} line {number} is not a valid cassette entry")
        entries.append(entry)
    return entries


_PATH_LOCKS: dict[Path, threading.Lock] = {}
_PATH_LOCKS_GUARD = threading.Lock()


def _lock_for(path: Path) -> threading.Lock:
    """One lock per file, shared by every recorder of a run (the levels' clients share a cassette)."""
    with _PATH_LOCKS_GUARD:
        return _PATH_LOCKS.setdefault(path, threading.Lock())


class CassetteRecorder:
    """Appends entries to a cassette file, one fsynced JSON line each (thread-safe, also across
    recorders of the same file in one process)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).resolve()
        self._lock = _lock_for(self.path)
        self._checked = False

    def append(self, entry: dict[str, Any]) -> None:
        line = (json.dumps(entry, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")
        with self._lock:
            if not self._checked:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                _end_last_line(self.path)
                self._checked = True
            with open(self.path, "ab") as fh:
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())

    def record(self, request: LLMRequest, reply: LLMReply, *, model_id: str, latency_s: float) -> None:
        self.append(
            {
                "request_hash": request.request_hash,
                "purpose": request.purpose,
                "request": {
                    "model": model_id,
                    "messages": list(request.messages),
                    "schema": request.schema_name,
                },
                "response": reply.text,
                "usage": {"prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens},
                "latency_s": round(latency_s, 4),
            }
        )


def _end_last_line(path: Path) -> None:
    """Make the file end with a newline before appending: a last entry that lacks only its newline
    gets one; a torn fragment (a crash mid-write) is cut off."""
    if not path.exists():
        return
    with open(path, "rb+") as fh:
        data = fh.read()
        if not data or data.endswith(b"\n"):
            return
        start = data.rfind(b"\n") + 1
        if _parse_entry(data[start:]) is not None:
            fh.write(b"\n")
        else:
            logger.warning("cassette %s: cutting a torn last line of %d bytes", path, len(data) - start)
            fh.truncate(start)
        fh.flush()
        os.fsync(fh.fileno())


def _parse_entry(line: bytes) -> dict[str, Any] | None:
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    if isinstance(entry, dict) and "request_hash" in entry and "response" in entry:
        return entry
    return None


class ReplayBackend:
    """Answers from a cassette by request hash. Entries with the same hash are served in recorded
    order (a run may ask the same thing twice); once used up, the last one repeats."""

    billable = False
    retryable = False

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._queues: dict[str, deque[dict[str, Any]]] = defaultdict(deque)
        self._last: dict[str, dict[str, Any]] = {}
        for entry in read_cassette(self.path):
            self._queues[entry["request_hash"]].append(entry)
        logger.info(
            "replay: %d recorded answers from %s", sum(len(q) for q in self._queues.values()), self.path
        )

    def send(self, request: LLMRequest, *, model: str) -> LLMReply:
        with self._lock:
            queue = self._queues.get(request.request_hash)
            if queue:
                entry = queue.popleft()
                self._last[request.request_hash] = entry
            else:
                entry = self._last.get(request.request_hash)
        if entry is None:
            raise ReplayMissError(
                f"replay miss: cassette {self.path} has no answer for purpose {request.purpose!r} "
                f"(request hash {request.request_hash}, schema {request.schema_name}); the prompt or code "
                f"changed since it was recorded — record it again"
            )
        usage = entry.get("usage") or {}
        return LLMReply(
            text=entry["response"],
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            model=(entry.get("request") or {}).get("model"),
        )

    def close(self) -> None:
        return None
