"""Generated pipeline stage: counter-argument pass.

Written by the offline stand-in stage designer from template 'counter_argument' (not by a model).
Finds the essay's sweeping claims and, for each, states the objection a skeptical reader would
raise, so that the revision answers it right after the claim.
"""

import re

from domains.article_opt.pipeline.contract import Finding, Findings, Stage, StageContext

PARAMS = {
    "name": "counter_argument",  # the stage's name in the pipeline (unique per run)
    "max_items": 3,  # at most this many findings per pass
}

SWEEPING = re.compile(r"\b(almost every|every \w+ (?:that|who|which)|always|never|nobody|no one|the only|"
                      r"overwhelming|simply no|largely|without exception)\b", re.IGNORECASE)
ANSWERED = re.compile(r"\b(objection|critics|skeptic|counter-example|that said|exceptions)\b", re.IGNORECASE)
SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
MAX_ITEMS = PARAMS["max_items"]
# Several phrasings, picked per claim, so the answers do not read as one stock sentence.
OBJECTIONS = (
    "A skeptic would ask for more than one example before accepting this.",
    "Critics would call this a tendency rather than a rule, and the essay should say so.",
    "One objection is that this rests on a handful of cases, not on a survey.",
    "A single counter-example would weaken this, so it holds only for the cases described.",
    "That said, exceptions exist, and the argument does not depend on there being none.",
)


class CounterArgumentStage(Stage):
    name = PARAMS["name"]
    description = "state the strongest objection to each sweeping claim"
    reads = ("article",)

    def run(self, ctx: StageContext) -> Findings:
        items = []
        used = [o for o in OBJECTIONS if o in ctx.article]  # each phrasing once per article
        free = [o for o in OBJECTIONS if o not in used]
        for heading, paragraph in ctx.paragraphs():
            if paragraph[:1].isdigit() or paragraph.startswith(("-", "*")):
                continue  # a list, not an argument
            sentences = SENTENCE.split(paragraph)
            for i, sentence in enumerate(sentences):
                if len(items) >= MAX_ITEMS or not free:
                    break
                following = sentences[i + 1] if i + 1 < len(sentences) else ""
                if not SWEEPING.search(sentence) or ANSWERED.search(sentence) or ANSWERED.search(following):
                    continue
                items.append(Finding(kind="objection", section=heading, quote=sentence,
                                     suggestion=free.pop(len(sentence) % len(free))))
        return Findings(items=items, summary=f"{len(items)} claims a skeptic would challenge")
