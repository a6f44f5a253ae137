"""Fixtures for article_opt tests: fresh sessions on a tmp run directory, and a way to swap one
offline stand-in handler for a scripted one (restored afterwards)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from core.llm_client import register_offline_handler
from domains.article_opt import offline
from domains.article_opt.session import ArticleSession, make_settings

SHORT_ARTICLE = """# A Short Essay on Testing

Tests always catch bugs. It is generally a good idea to write them, and it may perhaps help.

## Why tests matter

The suite took three weeks to write. Nobody regrets writing tests, and every team that tried them improved.

## Later

The suite took nearly two months to write, which was more than planned.

## Conclusion

Testing is good, and that is the end of it.
"""


@pytest.fixture
def swap_handler() -> Iterator[Callable[[str, Callable[[Any], Any]], None]]:
    """``swap_handler(purpose, fn)`` replaces an offline handler for the rest of the test."""
    offline.register()
    swapped: list[str] = []

    def swap(purpose: str, fn: Callable[[Any], Any]) -> None:
        register_offline_handler(purpose, fn, replace=True)
        swapped.append(purpose)

    yield swap
    for purpose in swapped:
        register_offline_handler(purpose, offline.HANDLERS[purpose], replace=True)


@pytest.fixture
def short_article(tmp_path: Path) -> Path:
    path = tmp_path / "short.md"
    path.write_text(SHORT_ARTICLE, encoding="utf-8")
    return path


@pytest.fixture
def make_session(tmp_path: Path) -> Iterator[Callable[..., ArticleSession]]:
    """``make_session(articles=..., **settings)`` → a started session on ``tmp_path/run``."""
    sessions: list[ArticleSession] = []

    def make(*, run_dir: Path | None = None, **values: Any) -> ArticleSession:
        values.setdefault("articles", ("article1",))
        session = ArticleSession.start(make_settings(**values), run_dir or tmp_path / f"run{len(sessions)}")
        sessions.append(session)
        return session

    yield make
    for session in sessions:
        session.close()
