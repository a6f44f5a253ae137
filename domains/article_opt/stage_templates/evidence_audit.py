"""Generated pipeline stage: evidence audit.

Written by the offline stand-in stage designer from template 'evidence_audit' (not by a model).
Lists strong claims that carry no evidence marker (a number, an example, a source) so the
revision narrows them to what the essay supports.
"""

import re

from domains.article_opt.pipeline.contract import Finding, Findings, Stage, StageContext

PARAMS = {
    "name": "evidence_audit",  # the stage's name in the pipeline (unique per run)
    "max_items": 3,  # at most this many findings per pass
}

STRONG = re.compile(r"\b(every|always|never|nobody|no one|the only|overwhelming|must|clearly|simply)\b",
                    re.IGNORECASE)
EVIDENCE = re.compile(r"\d|for example|for instance|measured|data|study|according to|cases described",
                      re.IGNORECASE)
SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


class EvidenceAuditStage(Stage):
    name = PARAMS["name"]
    description = "list strong claims with no support"
    reads = ("article",)

    def run(self, ctx: StageContext) -> Findings:
        items = []
        for heading, paragraph in ctx.paragraphs():
            for sentence in SENTENCE.split(paragraph):
                if STRONG.search(sentence) and not EVIDENCE.search(sentence) and len(items) < PARAMS["max_items"]:
                    items.append(Finding(kind="unsupported", section=heading, quote=sentence,
                                         suggestion="narrow the claim to the cases the essay describes"))
        return Findings(items=items, summary=f"{len(items)} unsupported strong claims")
