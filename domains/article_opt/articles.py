"""Input articles: resolving a name or a path, and splitting markdown into sections.

An article is ``# Title``, an untitled lead (the paragraphs before the first ``## ``), then
``## `` sections. :func:`split_sections` and :func:`join_sections` round-trip exactly, so a section
the revision did not touch is copied back byte for byte.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from core.errors import UserError

ARTICLES_DIR = Path(__file__).resolve().parents[2] / "articles"
HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*$", re.MULTILINE)
LEAD = "(lead)"  # the heading key of the text before the first ``##`` section


@dataclass(frozen=True)
class Section:
    """One part of an article. ``heading`` is the heading line's text (``LEAD`` for the part
    before the first ``##``, which holds the ``# Title`` line); ``text`` includes the heading line."""

    heading: str
    text: str

    @property
    def body(self) -> str:
        if self.heading == LEAD:
            return self.text
        return self.text.split("\n", 1)[1] if "\n" in self.text else ""


@dataclass(frozen=True)
class ArticleSource:
    name: str
    path: Path
    text: str


def resolve_article(spec: str, *, articles_dir: Path = ARTICLES_DIR) -> ArticleSource:
    """``article1`` → ``articles/article1.md``; anything with a ``/`` or ending ``.md`` is a path."""
    spec = spec.strip()
    if not spec:
        raise UserError("empty article name; pass a name from articles/ (e.g. article1) or a path to a .md file")
    looks_like_path = "/" in spec or spec.endswith(".md")
    path = Path(spec) if looks_like_path else Path(articles_dir) / f"{spec}.md"
    if not path.is_file():
        known = sorted(p.stem for p in Path(articles_dir).glob("*.md") if p.stem.lower() != "readme")
        hint = f" (known: {', '.join(known)})" if known and not looks_like_path else ""
        raise UserError(f"unknown article {spec!r}: no file {path}{hint}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read article {path}: {exc}") from exc
    if not text.strip():
        raise UserError(f"article {path} is empty")
    name = path.stem if looks_like_path else spec
    return ArticleSource(name=re.sub(r"[^A-Za-z0-9_.-]+", "_", name), path=path, text=text)


def split_sections(text: str) -> list[Section]:
    """Split at ``## `` headings (deeper headings stay inside their section)."""
    starts = [m.start() for m in re.finditer(r"^## ", text, re.MULTILINE)]
    if not starts or starts[0] != 0:
        starts = [0, *starts]
    sections: list[Section] = []
    for i, start in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else len(text)
        chunk = text[start:end]
        if chunk.startswith("## "):
            heading = chunk.split("\n", 1)[0][3:].strip()
        else:
            heading = LEAD
        sections.append(Section(heading=heading, text=chunk))
    return sections


def join_sections(sections: list[Section]) -> str:
    return "".join(s.text for s in sections)


def headings(text: str) -> list[str]:
    """Every markdown heading line, in order, as ``'## Name'`` (level marks kept)."""
    return [f"{m.group(1)} {m.group(2).strip()}" for m in HEADING.finditer(text)]


def title(text: str) -> str:
    for m in HEADING.finditer(text):
        if len(m.group(1)) == 1:
            return m.group(2).strip()
    return ""


def word_count(text: str) -> int:
    return len(re.findall(r"[A-Za-z0-9][A-Za-z0-9'’-]*", text))
