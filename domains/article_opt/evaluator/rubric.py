"""The rubric: five named dimensions, each scored 0–10 against anchored descriptions.

The overall score is computed here, in code (a weighted mean of the dimension scores), never taken
from the judge's reply.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Anchor(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    score: int = Field(ge=0, le=10)
    description: str


class Dimension(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    question: str
    anchors: tuple[Anchor, ...]
    weight: float = Field(1.0, gt=0)


class Rubric(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    dimensions: tuple[Dimension, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.dimensions)

    def overall(self, scores: dict[str, float]) -> float:
        """Weighted mean of the dimension scores, each clipped to 0–10; a missing one is an error."""
        missing = [d.name for d in self.dimensions if d.name not in scores]
        if missing:
            raise ValueError(f"scores lack rubric dimensions {missing}")
        total = sum(d.weight for d in self.dimensions)
        value = sum(d.weight * min(10.0, max(0.0, float(scores[d.name]))) for d in self.dimensions) / total
        return round(value, 3)

    def render(self) -> str:
        lines = []
        for d in self.dimensions:
            lines.append(f"{d.name}: {d.question}")
            lines.extend(f"  {a.score}: {a.description}" for a in d.anchors)
        return "\n".join(lines)


def _dim(name: str, question: str, *anchors: tuple[int, str]) -> Dimension:
    return Dimension(name=name, question=question, anchors=tuple(Anchor(score=s, description=d) for s, d in anchors))


RUBRIC = Rubric(dimensions=(
    _dim("rigor", "Are claims supported, qualified to what the evidence shows, and challenged where they are strong?",
         (0, "sweeping claims with no support; numbers appear from nowhere"),
         (5, "main claims have some support, but several generalisations go unqualified"),
         (10, "every substantive claim is supported or explicitly narrowed; objections are met")),
    _dim("clarity", "Can a reader follow the argument without effort?",
         (0, "hedged, vague and rambling; the point of sections is hard to find"),
         (5, "readable, with stretches of hedging, filler or overlong sentences"),
         (10, "direct sentences, each section opens with its point, no filler")),
    _dim("internal_consistency", "Do the essay's facts, numbers and claims agree with each other?",
         (0, "several figures or claims contradict each other"),
         (5, "one notable contradiction or a repeated passage"),
         (10, "every number and claim agrees wherever it recurs")),
    _dim("insight", "Does the essay explain why, weigh alternatives and say something non-obvious?",
         (0, "restates common knowledge; no reasons or trade-offs"),
         (5, "some causal explanation, few alternatives or counterpoints considered"),
         (10, "explains mechanisms, weighs counter-arguments, reaches a non-obvious conclusion")),
    _dim("actionability", "Does the reader know what to do next?",
         (0, "ends by restating the argument; nothing to do"),
         (5, "general recommendations without concrete steps"),
         (10, "a short ordered list of specific actions, with a first step doable this week")),
))
