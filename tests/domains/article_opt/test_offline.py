"""The offline stand-in: deterministic for a seed, measures real text features, makes real edits."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest

from core.records import TrialRecord
from domains.article_opt.articles import ARTICLES_DIR, LEAD, join_sections, resolve_article, split_sections
from domains.article_opt.evaluator import RUBRIC
from domains.article_opt.offline import edits
from domains.article_opt.offline.features import action_items, contradictions, measure
from domains.article_opt.offline.judge import dimension_scores, judge_handler

ARTICLES = {name: (ARTICLES_DIR / f"{name}.md").read_text(encoding="utf-8") for name in ("article1", "article2", "article3")}


@pytest.mark.parametrize("name, planted", [
    ("article1", ("three weeks", "nearly two months")),
    ("article2", ("fifteen degrees", "only a few degrees")),
    ("article3", ("around 600 to 750 hours", "around 1,100 hours")),
])
def test_the_planted_contradiction_of_each_article_is_detected(name: str, planted: tuple[str, str]) -> None:
    pairs = {(c.first.text, c.second.text) for c in contradictions(ARTICLES[name])}
    assert planted in pairs


@pytest.mark.parametrize("name", sorted(ARTICLES))
def test_no_planted_article_has_action_items_and_each_split_round_trips(name: str) -> None:
    assert action_items(ARTICLES[name]) == []
    assert join_sections(split_sections(ARTICLES[name])) == ARTICLES[name]
    assert split_sections(ARTICLES[name])[0].heading == LEAD


def test_real_edits_fix_what_the_judge_measures() -> None:
    article = ARTICLES["article1"]
    before = dimension_scores(measure(article))
    sections = split_sections(article)
    fixed = []
    for s in sections:
        text, _ = edits.reconcile_numbers(s.text, article)
        text, _ = edits.remove_hedges(text)
        if s is sections[-1]:
            text, _ = edits.add_actions(text, article)
        fixed.append(text)
    after_text = "".join(fixed)
    after = dimension_scores(measure(after_text))
    assert contradictions(after_text) == [] and "nearly three weeks" in after_text
    assert len(action_items(after_text)) >= 3
    assert after["internal_consistency"] > before["internal_consistency"]
    assert after["actionability"] > before["actionability"] + 3
    assert after["clarity"] > before["clarity"]


def test_stock_phrases_and_repeated_sentences_are_penalised() -> None:
    article = ARTICLES["article2"]
    padded = article.replace("\n\n## ", "\n\nThat said, critics would call this a tendency rather than a rule.\n\n## ")
    assert dimension_scores(measure(padded))["clarity"] < dimension_scores(measure(article))["clarity"]


def test_offline_judge_is_labelled_and_reads_only_the_article() -> None:
    request = SimpleNamespace(context={"article": ARTICLES["article3"], "rubric": RUBRIC.model_dump(mode="json")},
                              rng=random.Random(0))
    reply = judge_handler(request)
    assert set(reply) == set(RUBRIC.names)
    assert all(v["reason"].startswith("offline stand-in") for v in reply.values())


def _scores(session) -> list[tuple]:
    return [(r.iteration, r.status.value, r.score) for r in session.inner["article1"].history]


def test_the_whole_offline_run_is_deterministic_for_a_seed(make_session) -> None:
    first = make_session(max_inner=2, max_outer=2, seed=7)
    first.run()
    second = make_session(max_inner=2, max_outer=2, seed=7)
    second.run()
    assert _scores(first) == _scores(second)
    best = [s.rundir.abs(s.inner["article1"].incumbent).read_text() for s in (first, second)]
    assert best[0] == best[1]
    levels = [[(r.proposal.region if r.proposal else None, r.status) for r in s.level2.history] for s in (first, second)]
    assert levels[0] == levels[1]
    assert all(isinstance(r, TrialRecord) for r in first.inner["article1"].history)


def test_article_paths_resolve_and_names_are_sanitised(tmp_path) -> None:
    path = tmp_path / "my essay.md"
    path.write_text("# T\n\nBody.\n", encoding="utf-8")
    source = resolve_article(str(path))
    assert source.name == "my_essay" and source.text.startswith("# T")
