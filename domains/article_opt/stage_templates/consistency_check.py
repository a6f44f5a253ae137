"""Generated pipeline stage: consistency check, asking the inner model.

Written by the offline stand-in stage designer from template 'consistency_check' (not by a model).
Asks the inner model (``ctx.ask``) for contradictory figures and keeps the findings that quote
text really present in the article.
"""

from domains.article_opt.pipeline.contract import Findings, Stage, StageContext

PARAMS = {
    "name": "consistency_check",  # the stage's name in the pipeline (unique per run)
    "max_items": 3,  # at most this many findings per pass
}


class ConsistencyCheckStage(Stage):
    name = PARAMS["name"]
    description = "find numbers and claims that contradict each other"
    reads = ("article",)

    def run(self, ctx: StageContext) -> Findings:
        found = ctx.ask("List every number, duration or quantity that contradicts another mention of "
                        "the same thing elsewhere in the essay; quote the later mention.")
        items = [f for f in found.items if f.kind == "contradiction" and f.quote and f.quote in ctx.article]
        return Findings(items=items[:PARAMS["max_items"]], summary=f"{len(items)} contradictions confirmed in the text")
