"""article_opt sends the essay once per call that needs it, first and in a message of its own, so
providers can cache it: analysis and the judge get it whole; hypotheses work from the analysis,
assessment sees the sections the plan touches, revision the part it revises."""

from __future__ import annotations

from collections import Counter

import pytest

from core.llm import offline as offline_backend
from core.llm_client import RetryPolicy, make_client
from domains.article_opt.articles import ARTICLES_DIR, split_sections
from domains.article_opt.pipeline.stages import touched_sections
from domains.article_opt.prompts import render
from tests.core.llm.conftest import FakeLLMServer


@pytest.fixture
def wire(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, tuple]]:
    """Every request's purpose and wire messages (what a network backend would send)."""
    seen: list[tuple[str, tuple]] = []
    real = offline_backend.OfflineBackend.send

    def spy(self, request, *, model):
        seen.append((request.purpose, request.wire_messages))
        return real(self, request, model=model)

    monkeypatch.setattr(offline_backend.OfflineBackend, "send", spy)
    return seen


def test_one_iteration_sends_the_whole_essay_only_to_analysis_and_the_judge(make_session, wire):
    original = (ARTICLES_DIR / "article1.md").read_text(encoding="utf-8").strip()
    session = make_session(max_inner=1, max_outer=1, levels=("1",))
    session.run()
    whole = Counter(purpose for purpose, messages in wire if any(original in m["content"] for m in messages))
    assert whole == Counter({"article.analysis": 1, "article.judge": 1})  # the judge: the baseline
    for purpose, messages in wire:
        if purpose in ("article.analysis", "article.judge"):
            assert messages[0]["role"] == "system" and messages[0]["content"].startswith("The essay under revision")
    asked = {purpose for purpose, _ in wire}
    assert {"article.hypotheses", "article.planning", "article.assessment", "article.revision"} <= asked


def test_assessment_sees_only_the_sections_the_plan_touches():
    article = (ARTICLES_DIR / "article1.md").read_text(encoding="utf-8")
    sections = split_sections(article)
    chosen, other = sections[-1], sections[1]
    excerpt = touched_sections(article, [{"section": chosen.heading, "instruction": "x"}])
    assert chosen.text.strip() in excerpt and other.text.strip() not in excerpt
    assert touched_sections(article, [{"section": "no such heading"}]).count("## ") == article.count("## ")


def test_the_leading_essay_block_is_cached_on_anthropic(monkeypatch):
    server = FakeLLMServer()
    try:
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
        server.script(server.anthropic_reply("ok"))
        client = make_client("anthropic:claude-test", base_url=server.base_url, timeout_s=5,
                             retry=RetryPolicy(max_retries=0))
        article = (ARTICLES_DIR / "article1.md").read_text(encoding="utf-8")
        client.complete(purpose="article.analysis", messages=render("analysis", document=article, lessons="-",
                                                                      guidance="", retry=""))
        client.close()
        first = server.requests[0].body["system"][0]
        assert article.strip() in first["text"] and first["cache_control"] == {"type": "ephemeral"}
    finally:
        server.close()
