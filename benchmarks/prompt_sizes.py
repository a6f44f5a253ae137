"""Prompt size per level and purpose, as sent on the wire (prompt-only structured output).

Runs a short offline three-level run of each domain (train_opt on the reliability stand-in target,
article_opt on ``articles/article1``) and measures every request's wire messages — the caller's
conversation plus the schema instruction — in characters and in tokens estimated as characters / 4.
The offline researcher answers; only the size of what an LLM would be sent is measured. Native
structured output (OpenAI ``json_schema``, Anthropic ``tool``) sends less: the schema travels in the
API's own field (not counted here) and the prompt only names it.

    python benchmarks/prompt_sizes.py
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from core.llm import offline as offline_module  # noqa: E402


def measure() -> dict[str, list[int]]:
    sizes: dict[str, list[int]] = defaultdict(list)
    real_send = offline_module.OfflineBackend.send

    def send(self, request, *, model):  # type: ignore[no-untyped-def]
        sizes[request.purpose].append(sum(len(m["content"]) for m in request.wire_messages))
        return real_send(self, request, model=model)

    offline_module.OfflineBackend.send = send  # type: ignore[method-assign]
    return sizes


def run_train_opt(work: Path) -> None:
    from domains.train_opt.session import TrainSession, make_settings

    clone = work / "clone"
    shutil.copytree(REPO / "tests" / "reliability" / "standin", clone, ignore=shutil.ignore_patterns("__pycache__"))
    session = TrainSession.start(
        make_settings(target_dir=str(clone), inner_budget=3, outer_cycles=3), work / "train_run"
    )
    try:
        session.run()
    finally:
        session.close()


def run_article_opt(work: Path) -> None:
    from domains.article_opt.session import ArticleSession, make_settings

    session = ArticleSession.start(make_settings(articles=("article1",), max_inner=3, max_outer=2), work / "article_run")
    try:
        session.run()
    finally:
        session.close()


def main() -> None:
    sizes = measure()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        for name, fn in (("train_opt", run_train_opt), ("article_opt", run_article_opt)):
            sizes.clear()
            fn(Path(tmp))
            print(f"{name}: purpose, calls, mean chars, mean tokens (chars/4), total tokens")
            for purpose, values in sorted(sizes.items()):
                mean = sum(values) / len(values)
                print(f"  {purpose:28s} {len(values):4d} {mean:9.0f} {mean / 4:8.0f} {sum(values) / 4:9.0f}")
            total = sum(sum(v) for v in sizes.values()) / 4
            print(f"  {'all':28s} {sum(len(v) for v in sizes.values()):4d} {'':9s} {'':8s} {total:9.0f}")


if __name__ == "__main__":
    main()
