"""Level 1.5: per-stage overrides from the score trace, validated, bounded, journaled, replayed."""

from __future__ import annotations

from typing import Any

from core.plugins import Decider
from domains.article_opt.evaluator import RUBRIC
from domains.article_opt.offline import stages as offline_stages
from domains.article_opt.outer import (
    KEEP_CYCLES,
    MAX_OVERRIDE_CHARS,
    MAX_STAGE_GUIDANCE_CHARS,
    current_overrides,
    load_frameworks,
    merge,
)
from domains.article_opt.session import ArticleSession


def test_reference_frameworks_parse_into_named_strategies_with_when_does_guidance() -> None:
    frameworks = load_frameworks()
    names = [f.name for f in frameworks]
    assert len(names) >= 10 and {"self-refine", "red-team", "actionable-ending", "prompt-optimization"} <= set(names)
    assert all(f.when and f.does and f.guidance for f in frameworks)


def test_merge_keeps_the_newest_first_and_at_most_the_last_few_cycles_within_a_bound() -> None:
    history = [{"cycle": c, "overrides": {"revision": f"instruction of cycle {c}"}} for c in range(5)]
    effective = merge(history, {"revision": "newest", "planning": "plan"}, 5)
    lines = effective["revision"].splitlines()
    assert lines[0] == "(cycle 5) newest" and len(lines) == KEEP_CYCLES
    assert lines[1:] == ["(cycle 4) instruction of cycle 4", "(cycle 3) instruction of cycle 3"]
    assert effective["planning"] == "(cycle 5) plan"
    long = merge([{"cycle": 0, "overrides": {"revision": "x" * 800}}], {"revision": "y" * 400}, 1)
    assert len(long["revision"]) <= MAX_STAGE_GUIDANCE_CHARS


def test_outer_patch_is_journaled_and_reaches_the_stages_as_guidance(make_session, swap_handler) -> None:
    seen: list[str] = []

    def spy(request: Any) -> dict[str, Any]:
        seen.append(request.context["guidance"])
        return offline_stages.hypotheses(request)

    swap_handler("article.hypotheses", spy)
    session = make_session(max_inner=2, max_outer=2, levels=("1", "1.5"))
    session.run()
    (patch,) = session.rundir.journal.events("outer_patch")
    assert patch["cycle"] == 0 and patch["strategy"] in {f.name for f in load_frameworks()}
    assert set(patch["dimensions"]) == {"rigor", "clarity", "internal_consistency", "insight", "actionability"}
    assert seen[:2] == ["", ""]  # cycle 0 ran without overrides
    assert all(patch["overrides"]["hypotheses"] in g for g in seen[2:])
    assert current_overrides(session.rundir.journal) == patch["effective"]


def test_an_invalid_patch_is_retried_once_then_rejected_and_the_old_overrides_stay(make_session, swap_handler) -> None:
    tries: list[Any] = []

    def bad(request: Any) -> dict[str, Any]:
        tries.append(request.context.get("retry_error"))
        return {"strategy": "astrology", "diagnosis": "x", "overrides": [{"stage": "revision", "instruction": "y"}]}

    swap_handler("article.outer", bad)
    session = make_session(max_inner=1, max_outer=2, levels=("1", "1.5"))
    session.run()
    assert len(tries) == 2 and tries[0] is None and "astrology" in tries[1]
    (rejected,) = session.rundir.journal.events("outer_rejected")
    assert "reference frameworks" in rejected["error"]
    assert session.pipeline.overrides == {}


def test_overrides_are_bounded_and_unknown_stages_rejected(make_session, swap_handler) -> None:
    answers = iter([
        {"strategy": "self-refine", "diagnosis": "x", "overrides": [{"stage": "no_such_stage", "instruction": "y"}]},
        {"strategy": "self-refine", "diagnosis": "x", "overrides": [{"stage": "revision", "instruction": "z " * 900}]},
    ])
    swap_handler("article.outer", lambda request: next(answers))
    session = make_session(max_inner=1, max_outer=2, levels=("1", "1.5"))
    session.run()
    (patch,) = session.rundir.journal.events("outer_patch")
    assert len(patch["overrides"]["revision"]) <= MAX_OVERRIDE_CHARS


class KeepAll(Decider):
    def decide(self, score: float, incumbent: float | None, ctx: Any) -> bool:
        return True


def test_overrides_are_replayed_on_resume(make_session, tmp_path) -> None:
    session = make_session(max_inner=1, max_outer=2, levels=("1", "1.5"), run_dir=tmp_path / "r")
    session.outer_decider = KeepAll()  # this test is about replay: keep the patch whatever its cycle scored
    session.run()
    effective = dict(session.pipeline.overrides)
    session.close()
    resumed = ArticleSession.resume(tmp_path / "r")
    try:
        assert effective and resumed.pipeline.overrides == effective
    finally:
        resumed.close()


def test_a_patch_whose_cycle_does_not_beat_the_one_before_is_reverted_and_stays_reverted_on_resume(
        make_session, swap_handler, tmp_path) -> None:
    flat = {d: {"score": 5.0, "reason": "flat"} for d in RUBRIC.names}
    swap_handler("article.judge", lambda request: flat)  # no cycle gains: no patch can beat its parent
    session = make_session(max_inner=1, max_outer=3, levels=("1", "1.5"), run_dir=tmp_path / "r")
    session.run()
    journal = session.rundir.journal
    patches = list(journal.events("outer_patch"))
    verdicts = list(journal.events("level15_verdict"))
    assert [p["cycle"] for p in patches] == [0, 1] and [v["cycle"] for v in verdicts] == [0, 1]
    assert all(not v["kept"] and v["governed"] == v["cycle"] + 1 and v["restored"] == {} for v in verdicts)
    assert session.pipeline.overrides == {}
    # the second patch is merged without the reverted first one
    assert "(cycle 0)" not in "".join(patches[1]["effective"].values())
    session.close()
    resumed = ArticleSession.resume(tmp_path / "r")
    try:
        assert resumed.pipeline.overrides == {}
    finally:
        resumed.close()


def test_stage_failures_steer_the_offline_analyzer_to_prompt_optimization(make_session, swap_handler) -> None:
    def drop_heading(request: Any) -> dict[str, Any]:
        return {"text": request.context["text"].split("\n", 1)[-1], "changes": []}

    swap_handler("article.revision", drop_heading)
    session = make_session(max_inner=1, max_outer=2, levels=("1", "1.5"))
    session.run()
    patch = next(session.rundir.journal.events("outer_patch"))
    assert patch["strategy"] == "prompt-optimization" and "revision" in patch["overrides"]
