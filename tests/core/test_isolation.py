"""Lessons and guidance steer proposals, never judgments: the evaluator cannot see them."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from core.records import Constraints, EvalInput, Guidance, ProposalContext, TrialRecord
from tests.core.helpers import (
    QuadraticExecutor,
    QuadraticProposer,
    RecordingEvaluator,
    make_controller,
    make_mechanism,
)

ITERATIONS = 6


def test_eval_input_has_only_metrics_and_artifact_text() -> None:
    assert set(EvalInput.model_fields) == {"metrics", "artifact_text"}


def test_eval_input_refuses_extra_fields_and_mutation() -> None:
    with pytest.raises(ValidationError):
        EvalInput(metrics={"loss": 1.0}, lessons=("always keep",))  # type: ignore[call-arg]
    inp = EvalInput(metrics={"loss": 1.0})
    with pytest.raises(ValidationError):
        inp.artifact_text = "smuggled guidance"  # type: ignore[misc]


def _lessons(history: tuple[TrialRecord, ...]) -> list[str]:
    return [f"lesson {i}: x below 2 scored well" for i in range(len(history))]


def _run(path: Path, *, steered: bool) -> tuple[RecordingEvaluator, QuadraticProposer]:
    proposer = QuadraticProposer()
    evaluator = RecordingEvaluator()
    ctl = make_controller(path, proposer=proposer, executor=QuadraticExecutor(write_artifacts=True),
                          evaluator=evaluator, seed=11, lessons=_lessons if steered else None)
    if steered:
        # Constraints the quadratic proposer does not act on, so the candidates stay the same and any
        # difference in what the evaluator sees could only have leaked from lessons or guidance.
        ctl.outer_guidance = Guidance(text="OUTER: prefer small x", constraints=Constraints(avoid_params=("lr",)))
        ctl.attach(make_mechanism("coach", guidance=lambda ctx: Guidance(
            text="MECHANISM: keep anything", constraints=Constraints(prefer_params=("x",)))))
    ctl.ensure_baseline()
    ctl.run_cycle(0, ITERATIONS)
    ctl.run.close()
    return evaluator, proposer


def test_evaluator_input_is_identical_with_and_without_lessons_and_guidance(tmp_path: Path) -> None:
    plain_eval, plain_prop = _run(tmp_path / "plain", steered=False)
    steered_eval, steered_prop = _run(tmp_path / "steered", steered=True)

    # the steering really reached the steered run's proposer ...
    last = steered_prop.contexts[-1]
    assert last.lessons and "MECHANISM: keep anything" in last.guidance.text
    assert plain_prop.contexts[-1].lessons == () and plain_prop.contexts[-1].guidance == Guidance()
    # ... and left no trace in what either evaluator was given
    assert len(steered_eval.inputs) == ITERATIONS + 1
    assert all(inp.artifact_text and inp.artifact_text.startswith("x = ") for inp in steered_eval.inputs)
    assert steered_eval.inputs == plain_eval.inputs
    for inp in steered_eval.inputs:
        dumped = inp.model_dump_json()
        assert "lesson" not in dumped and "OUTER" not in dumped and "MECHANISM" not in dumped


def test_proposal_context_carries_lessons_and_guidance_to_the_proposer(tmp_path: Path) -> None:
    proposer = QuadraticProposer()
    ctl = make_controller(tmp_path / "run", proposer=proposer, lessons=_lessons)
    ctl.outer_guidance = Guidance(text="OUTER: prefer small x", constraints=Constraints(step_scale=0.25))
    ctl.ensure_baseline()
    ctl.run_cycle(0, 2)

    first, second = proposer.contexts
    assert isinstance(first, ProposalContext)
    assert first.lessons == ("lesson 0: x below 2 scored well",)  # recomputed from the history each time
    assert len(second.lessons) == 2
    assert first.guidance.text == "OUTER: prefer small x"
    assert first.guidance.constraints.step_scale == 0.25
    assert set(ProposalContext.model_fields) >= {"lessons", "guidance", "feedback", "history"}
