"""Real text operations the offline stand-in revision applies.

Each function takes a section's text (heading line included) and returns the edited text plus a
list of what it changed; each is deliberately simple (phrase tables and regular expressions) and
deterministic. Together they are the offline stand-in for a model rewriting prose — documented as
such, never presented as one.
"""

from __future__ import annotations

import re

from domains.article_opt.articles import split_sections
from domains.article_opt.offline.features import (
    ABSOLUTE,
    COUNTERPOINT,
    HEDGE,
    action_items,
    contradictions,
    sentences,
    stems,
)

# Hedge phrase → plainer wording (longest first; "" deletes it).
DEHEDGE: tuple[tuple[str, str], ...] = (
    (r"it may also be worth bearing in mind that ", ""),
    (r"it is generally a good idea to ", ""),
    (r"it seems reasonable to suggest that ", ""),
    (r"might also be worth considering", "are worth tracking"),
    (r"may also be worth considering", "are worth tracking"),
    (r"it may be that ", ""),
    (r"it may be worth ", "it is worth "),
    (r"will tend to ", "will "),
    (r"tend to ", ""),
    (r"is likely to ", "will "),
    (r"are likely to ", "will "),
    (r", of course, ", " "),
    (r"of course,? ", ""),
    (r"in general,? ", ""),
    (r"on the whole,? ", ""),
    (r"in many cases,? ", "often "),
    (r"in some cases,? ", ""),
    (r"in some circumstances,? ", ""),
    (r",? ?at times", ""),
    (r"to some extent,? ", ""),
    (r"can sometimes ", "can "),
    (r"may sometimes ", "can "),
    (r"could reflect ", "reflect "),
    (r"may be related to ", "are related to "),
    (r"(?:probably|perhaps|possibly|generally|somewhat|arguably|reasonably|likely) ", ""),
    (r"might ", "can "),
    (r"may ", "can "),
    (r"it seems ", ""),
)

# Sweeping absolute → a claim narrowed to what an essay can support (grammatical number kept).
QUALIFY: tuple[tuple[str, str], ...] = (
    (r"almost every (\w+)", r"a typical \1"),
    (r"every (team|tree|city|engineer|learner|adult|council)", r"a typical \1"),
    (r"nobody has ever", "hardly anyone has"),
    (r"nobody", "hardly anyone"),
    (r"no one", "hardly anyone"),
    (r"(?<!not )always", "usually"),
    (r"(?<!not )never", "rarely"),
    (r"there is simply no good reason", "there is rarely a good reason"),
    (r"there is no good reason", "there is rarely a good reason"),
    (r"is the only (\w+)", r"is one \1"),
    (r"the only (\w+)", r"a major \1"),
    (r"simply no", "rarely a"),
    (r"overwhelming", "strong"),
    (r"largely a waste of time", "of limited value on their own"),
    (r"consistently", "often"),
    (r"reliably", "often"),
    (r"all of them", "most of them"),
    (r"without exception,? ?", ""),
    (r"clearly ", ""),
    (r"obviously ", ""),
    (r"simply ", ""),
)


def _match_case(old: str, new: str) -> str:
    if old[:1].isupper() and new:
        return new[0].upper() + new[1:]
    return new


def _tidy(text: str) -> str:
    text = re.sub(r"[ \t]{2,}", " ", text)
    text = re.sub(r" +([,.;:])", r"\1", text)
    text = re.sub(r",\s*,", ",", text)
    text = re.sub(r"(^|[.!?]\s+|\n)([a-z])", lambda m: m.group(1) + m.group(2).upper(), text)
    return text


def _split_heading(text: str) -> tuple[str, str]:
    if text.startswith("#"):
        head, _, body = text.partition("\n")
        return head + "\n", body
    return "", text


def remove_hedges(text: str) -> tuple[str, list[str]]:
    head, body = _split_heading(text)
    changes: list[str] = []
    for pattern, repl in DEHEDGE:
        rx = re.compile(r"\b" + pattern, re.IGNORECASE)

        def sub(m: re.Match[str], repl: str = repl) -> str:
            changes.append(f"'{m.group(0).strip()}' -> '{repl.strip()}'" if repl.strip() else f"cut '{m.group(0).strip()}'")
            return _match_case(m.group(0), repl)

        body = rx.sub(sub, body)
    return head + _tidy(body), changes


def qualify_claims(text: str, *, limit: int = 4) -> tuple[str, list[str]]:
    head, body = _split_heading(text)
    changes: list[str] = []
    for sentence in sentences(body):
        if len(changes) >= limit:
            break
        if not ABSOLUTE.search(sentence):
            continue
        new = sentence
        for pattern, repl in QUALIFY:
            new = re.sub(r"(?<!not )\b" + pattern + r"\b", lambda m, r=repl: _match_case(m.group(0), m.expand(r)), new,
                         flags=re.IGNORECASE)
        if new != sentence:
            body = body.replace(sentence, new, 1)
            changes.append(f"narrowed: '{sentence[:60]}...'")
    return head + _tidy(body), changes


def reconcile_numbers(text: str, article: str) -> tuple[str, list[str]]:
    """For each contradiction whose weaker mention lies in ``text`` (a part of ``article``), use the
    better-attested figure (the one the article repeats more; the earlier one on a tie). Mentions
    are located by their offset in the article, so an identical phrase elsewhere is left alone."""
    changes: list[str] = []
    base = article.find(text)
    if base < 0:
        return text, changes
    edits: list[tuple[int, int, str]] = []
    for c in contradictions(article):
        first, second = c.first, c.second
        count1 = article.lower().count(first.core.lower())
        count2 = article.lower().count(second.core.lower())
        keep, drop = (second, first) if count2 > count1 else (first, second)
        at = drop.start - base
        if not 0 <= at < len(text) or text[at:at + len(drop.text)] != drop.text:
            continue
        new_text = drop.text.replace(drop.core, keep.core)
        edits.append((at, at + len(drop.text), new_text))
        changes.append(f"'{drop.text}' -> '{new_text}' to agree with '{keep.text}'")
    for start, end, new_text in sorted(edits, reverse=True):  # right to left: offsets stay valid
        text = text[:start] + new_text + text[end:]
    return text, changes


def add_actions(text: str, article: str, *, count: int = 4) -> tuple[str, list[str]]:
    """Append an ordered list of concrete next steps built from the article's own sections."""
    if action_items(text if text.startswith("## ") else article):
        return text, []
    body_sections = [s for s in split_sections(article) if s.heading != "(lead)"][:-1]
    topics = [s.heading.lower().rstrip(".?!") for s in body_sections] or ["the main argument"]
    steps = [
        f"Write down this week what you currently believe about {topics[0]}, and one number that would "
        "confirm or refute it.",
        "Collect that number every week for a month before changing anything.",
        "Fix first the single largest problem the numbers show, and postpone the rest in writing.",
        "Compare the result with your starting point after a month, and share it with everyone affected.",
        "Repeat the check each quarter, dropping any measure nobody used.",
    ][: max(3, min(5, count))]
    block = "\nWhat to do next:\n\n" + "\n".join(f"{i}. {s}" for i, s in enumerate(steps, 1)) + "\n"
    stripped = text.rstrip("\n")
    return stripped + "\n" + block, [f"added {len(steps)} concrete next steps"]


def split_long_sentences(text: str, *, max_words: int = 30, limit: int = 3) -> tuple[str, list[str]]:
    head, body = _split_heading(text)
    changes: list[str] = []
    for sentence in sentences(body):
        if len(changes) >= limit:
            break
        if len(sentence.split()) <= max_words:
            continue
        new = re.sub(r";\s+(\w)", lambda m: ". " + m.group(1).upper(), sentence, count=1)
        if new == sentence:
            new = re.sub(r",\s+(and|but|which means)\s+(\w)",
                         lambda m: ". " + m.group(1).capitalize() + " " + m.group(2), sentence, count=1)
        if new != sentence:
            body = body.replace(sentence, new, 1)
            changes.append(f"split a {len(sentence.split())}-word sentence")
    return head + body, changes


ANSWERS: tuple[str, ...] = (
    "A fair objection is that this does not hold everywhere; it rests on the cases described here.",
    "That said, a careful reader could name exceptions, so treat it as a tendency rather than a rule.",
    "Critics would point out that one example is not a survey, which is why the claim stays narrow.",
    "This does not mean it holds in every setting; it means the cases above are common enough to matter.",
    "On the other hand, the evidence offered so far is anecdotal, and a counter-example would weaken it.",
)


def default_answer(sentence: str) -> str:
    """A counterpoint for ``sentence``, one of several phrasings picked by its content (stable)."""
    return ANSWERS[sum(map(ord, sentence)) % len(ANSWERS)]


def add_counterpoint(text: str, quote: str, suggestion: str) -> tuple[str, list[str]]:
    """Answer an objection right after the sentence it targets."""
    answer = suggestion.strip() or default_answer(quote)
    if not answer.endswith((".", "!", "?")):
        answer += "."
    if answer in text:
        return text, []
    sents = sentences(text)
    index = next((i for i, s in enumerate(sents) if quote and (quote in s or s in quote)), None)
    if index is None:
        return text, []
    target = sents[index]
    if index + 1 < len(sents) and COUNTERPOINT.search(sents[index + 1]):
        return text, []  # already answered
    return text.replace(target, f"{target} {answer}", 1), [f"answered an objection after '{target[:50]}...'"]


def make_specific(text: str, quote: str) -> tuple[str, list[str]]:
    """Cut a sentence that is mostly hedging; otherwise strip its vague words."""
    target = next((s for s in sentences(text) if quote and (quote in s or s in quote)), None)
    if target is None:
        return text, []
    words = max(len(target.split()), 1)
    fuzz = len(HEDGE.findall(target)) + len(re.findall(r"\b(?:various|a variety of|a range of|things|certain|"
                                                          r"many different|some people|some observers)\b",
                                                          target, re.IGNORECASE))
    if fuzz >= 2 and fuzz * 6 >= words and len(sentences(text)) > 3:
        new_text = re.sub(r"\s*" + re.escape(target), "", text, count=1)
        return new_text, [f"cut a vague sentence: '{target[:60]}...'"]
    new = re.sub(r"\b(?:various|a variety of|a range of|many different|certain)\s+", "", target, flags=re.IGNORECASE)
    new = re.sub(r"\bsome observers\b", "critics", new, flags=re.IGNORECASE)
    new = _tidy(new)
    if new == target:
        return text, []
    return text.replace(target, new, 1), [f"made specific: '{target[:50]}...'"]


def clarify_structure(text: str, heading: str, suggestion: str) -> tuple[str, list[str]]:
    """Open the section with the sentence that states its point (one sharing words with its
    heading). A ``suggestion`` already in the section is moved to the front; a new one is
    prepended; without one, the section's own most on-topic sentence is moved up."""
    head, body = _split_heading(text)
    sents = sentences(body)
    if not head or not sents or stems(heading) & stems(sents[0]):
        return text, []
    opener = suggestion.strip()
    if not opener:
        ranked = sorted(sents[1:], key=lambda x: -len(stems(heading) & stems(x)))
        if not ranked or not stems(heading) & stems(ranked[0]):
            return text, []
        opener = ranked[0]
    lead = body.lstrip("\n")
    if opener in lead:
        lead = re.sub(r"\s*" + re.escape(opener), "", lead, count=1).lstrip()
        what = f"moved '{opener[:50]}...' to open '{heading}'"
    else:
        if not opener.endswith((".", "!", "?")):
            opener += "."
        what = f"opened '{heading}' with its point"
    return head + body[: len(body) - len(body.lstrip("\n"))] + opener + " " + lead, [what]
