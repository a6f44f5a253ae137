"""Generated pipeline stage: specificity pass.

Written by the offline stand-in stage designer from template 'specificity_pass' (not by a model).
Quotes sentences made mostly of hedges and vague words so the revision makes them concrete or
cuts them.
"""

import re

from domains.article_opt.pipeline.contract import Finding, Findings, Stage, StageContext

PARAMS = {
    "name": "specificity_pass",  # the stage's name in the pipeline (unique per run)
    "max_items": 3,  # at most this many findings per pass
    "min_fuzz": 2,  # vague words a sentence needs before it is quoted
}

FUZZY = re.compile(
    r"\b(may|might|perhaps|probably|possibly|generally|likely|somewhat|various|a variety of|a range of|"
    r"things|certain|some people|some observers|it seems|in general|on the whole|can sometimes)\b",
    re.IGNORECASE,
)
SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
MIN_FUZZ = PARAMS["min_fuzz"]
MAX_ITEMS = PARAMS["max_items"]


class SpecificityPassStage(Stage):
    name = PARAMS["name"]
    description = "quote vague, hedged sentences so the revision makes them concrete"
    reads = ("article",)

    def run(self, ctx: StageContext) -> Findings:
        items = []
        for heading, paragraph in ctx.paragraphs():
            for sentence in SENTENCE.split(paragraph):
                if len(items) < MAX_ITEMS and len(FUZZY.findall(sentence)) >= MIN_FUZZ:
                    items.append(Finding(kind="vague", section=heading, quote=sentence,
                                         suggestion="replace the qualifiers with the concrete claim, or cut it"))
        return Findings(items=items, summary=f"{len(items)} vague sentences")
