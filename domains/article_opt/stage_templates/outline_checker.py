"""Generated pipeline stage: outline checker.

Written by the offline stand-in stage designer from template 'outline_checker' (not by a model).
Checks that each section opens with a sentence stating its point (one that shares a word with the
heading) and, where one does not, names the section's most on-topic sentence for the revision to
move to the front.
"""

import re

from domains.article_opt.pipeline.contract import Finding, Findings, Stage, StageContext

PARAMS = {
    "name": "outline_checker",  # the stage's name in the pipeline (unique per run)
    "max_items": 3,  # at most this many findings per pass
}

WORD = re.compile(r"[a-z]{4,}")
SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def _words(text: str) -> set:
    return {w.rstrip("s")[:5] for w in WORD.findall(text.lower())}


class OutlineCheckerStage(Stage):
    name = PARAMS["name"]
    description = "make each section open with its point"
    reads = ("sections",)

    def run(self, ctx: StageContext) -> Findings:
        items = []
        for section in ctx.sections:
            if section.heading == "(lead)":
                continue
            body = section.text.split("\n", 1)[1].strip() if "\n" in section.text else ""
            sentences = [s for s in SENTENCE.split(body.split("\n\n")[0]) if s] if body else []
            if not sentences or _words(section.heading) & _words(sentences[0]):
                continue
            topic = _words(section.heading)
            best = max(sentences[1:], key=lambda s: len(topic & _words(s)), default="")
            if best and topic & _words(best):
                items.append(Finding(kind="structure", section=section.heading, quote=sentences[0],
                                     suggestion=best))
        return Findings(items=items[:PARAMS["max_items"]], summary=f"{len(items)} sections do not open with their point")
