"""The offline researcher's draws are common random numbers: they depend on (seed, purpose, iteration,
attempt, what the draw is for), not on the rest of the request text."""

from __future__ import annotations

import random

from core.llm.offline import offline_seed


def draws(seed: int, context: dict, purpose: str = "train.propose") -> list[float]:
    rng = random.Random(offline_seed(seed, purpose, context))
    return [rng.random() for _ in range(3)]


def test_text_a_mechanism_adds_does_not_re_randomise_the_draw():
    plain = {"iteration": 4, "feedback": [], "guidance": "", "history": [{"x": 1}]}
    variants = [
        {**plain, "guidance": "[tabu#1] avoid MATRIX_LR:up"},
        {**plain, "history": [{"x": 1}, {"x": 2}], "lessons": ["lr too high"]},
        {**plain, "constraints": {"avoid_params": ["DEPTH"]}, "search": {"strategy": "explore"}},
    ]
    for variant in variants:
        assert draws(0, variant) == draws(0, plain)


def test_two_groups_with_the_same_seed_draw_the_same_first_proposal():
    group_a = {"iteration": 1, "feedback": [], "guidance": "(none)"}
    group_c = {"iteration": 1, "feedback": [], "guidance": "Level 1.5: explore the batch size"}
    assert draws(3, group_a) == draws(3, group_c)
    assert draws(3, group_a) != draws(4, group_a)  # another seed, other luck


def test_iteration_attempt_purpose_and_article_each_give_another_draw():
    base = {"iteration": 2, "feedback": [], "article": "article1"}
    others = [
        {**base, "iteration": 3},
        {**base, "feedback": ["rejected: duplicate"]},  # a re-ask is a new attempt
        {**base, "attempt": 5},
        {**base, "article": "article2"},
    ]
    seen = {tuple(draws(0, base))}
    for other in others:
        seen.add(tuple(draws(0, other)))
    seen.add(tuple(draws(0, base, purpose="train.design")))
    assert len(seen) == len(others) + 2


def test_a_request_without_an_iteration_is_keyed_by_its_whole_content():
    # a judgment of a given text: same text, same draw; other text, other draw
    assert draws(0, {"article": "A"}, "article.judge") == draws(0, {"article": "A"}, "article.judge")
    assert draws(0, {"article": "A"}, "article.judge") != draws(0, {"article": "B"}, "article.judge")
