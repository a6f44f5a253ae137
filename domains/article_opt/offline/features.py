"""Measurable text features of an article, shared by the offline judge and offline stages.

Everything here is a plain, deterministic text measurement (regular expressions and counts): hedge
phrases, sweeping absolutes, evidence and counterpoint markers, sentence lengths, contradictory
quantities, imperative action items in the conclusion. It is what lets the offline stand-in judge
score a revision and the offline stand-in stages find something real to change. It is **not** a
model of writing quality, and nothing it produces is presented as an LLM's judgment.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field

from domains.article_opt.articles import LEAD, Section, split_sections, word_count

HEDGE_PATTERNS: tuple[str, ...] = (
    r"of course", r"it is generally a good idea to", r"it may also be worth bearing in mind that",
    r"it may be worth", r"might also be worth considering", r"may also be worth", r"it may be that",
    r"it seems reasonable to suggest that", r"it seems", r"is likely to", r"are likely to", r"likely",
    r"probably", r"perhaps", r"possibly", r"generally", r"in general,?", r"on the whole,?",
    r"to some extent", r"somewhat", r"arguably", r"reasonably", r"in many cases,?", r"in some cases,?",
    r"in some circumstances,?", r"at times", r"can sometimes", r"may sometimes", r"tends? to",
    r"will tend to", r"could reflect", r"may be related to", r"might", r"may",
)
HEDGE = re.compile(r"\b(?:" + "|".join(HEDGE_PATTERNS) + r")\b", re.IGNORECASE)

ABSOLUTE_PATTERNS: tuple[str, ...] = (
    r"almost every \w+", r"every \w+ (?:that|who|which)", r"every team", r"every tree", r"every city",
    r"nobody has ever", r"nobody", r"no one", r"always", r"never", r"the only \w+", r"simply no",
    r"overwhelming", r"largely a waste", r"only real", r"there is no good reason", r"consistently",
    r"reliably", r"all of them", r"without exception", r"is the only", r"guaranteed?",
)
ABSOLUTE = re.compile(r"(?<!\bnot )\b(?:" + "|".join(ABSOLUTE_PATTERNS) + r")\b", re.IGNORECASE)

EVIDENCE = re.compile(
    r"\b(?:for example|for instance|in one case|in the example|measured|measurement|data|study|studies|"
    r"survey|records?|recorded|according to|published|figures?|median|average|per cent|percent|sample|"
    r"the numbers)\b|\d+(?:\.\d+)?\s*(?:%|°C)",
    re.IGNORECASE,
)
COUNTERPOINT = re.compile(
    r"\b(?:however|a fair objection|an objection|this does not mean|on the other hand|the exception|"
    r"unless|that said|to be fair|critics|a skeptic|sceptic|counter-?example|does not hold)\b",
    re.IGNORECASE,
)
CAUSAL = re.compile(
    r"\b(?:because|which means|so that|as a result|therefore|the reason|this is why|leads to|explains|"
    r"in turn)\b",
    re.IGNORECASE,
)
VAGUE = re.compile(
    r"\b(?:things|stuff|various|a variety of|a range of|certain|many different|some people|some observers|"
    r"many considerations|a balance that works|as things evolve|in various ways|many different issues)\b",
    re.IGNORECASE,
)
NOT_IMPERATIVE = frozenset(
    "the a an this that these those it its we our they their there i you your he she his her one "
    "some many most all each every no not if when while although because as in on at to for of and "
    "but or so by with from".split()
)
TIME_BOUND = re.compile(r"\b(?:this week|today|tomorrow|first|within|by the end|next month|next week|"
                        r"for (?:two|one|four) weeks|for a month|every \w+day|\d+)\b", re.IGNORECASE)

NUMBER_WORDS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
    "ten": 10, "eleven": 11, "twelve": 12, "fifteen": 15, "twenty": 20, "thirty": 30, "forty": 40,
    "fifty": 50, "sixty": 60, "hundred": 100, "a hundred": 100, "a few": 3, "several": 4,
    "a couple of": 2, "a dozen": 12,
}
_NUM = r"(?:\d[\d,]*(?:\.\d+)?|" + "|".join(sorted((re.escape(w) for w in NUMBER_WORDS), key=len, reverse=True)) + ")"
UNITS = {
    "minute": ("time", 1 / 60), "hour": ("time", 1.0), "day": ("time", 24.0), "week": ("time", 168.0),
    "month": ("time", 730.0), "year": ("time", 8760.0), "degree": ("temperature", 1.0),
    "°c": ("temperature", 1.0), "per cent": ("percent", 1.0), "percent": ("percent", 1.0), "%": ("percent", 1.0),
}
QUANTITY = re.compile(
    r"(?P<mod>\b(?:around|about|roughly|nearly|almost|only|just under|just over|over|under|"
    r"more than|less than|some|within)\s+)?"
    r"\b(?P<a>" + _NUM + r")(?:\s*(?:to|-|–|or)\s*(?P<b>" + _NUM + r"))?"
    r"\s*(?P<unit>minutes?|hours?|days?|weeks?|months?|years?|degrees|°C|per cent|percent|%)",
    re.IGNORECASE,
)
STOPWORDS = frozenset(
    "about above after again against also among an and another any are around as at be because been "
    "before being below between both but by can could did does doing down during each even every few "
    "for from further had has have having here how however into its itself just least less like made "
    "make many more most much must near nearly need needs only other over own same should since some "
    "such than that their them then there these they this those through time times under until very was "
    "were what when where which while whole will with within without would your typical typically "
    "roughly around already take takes took spent spend spending first second feel feels felt perhaps "
    "probably possibly people thing things years".split()
)
TAIL = re.compile(r"\b(?:long tail|longest|up to|as long as|at most|at least|the worst)\b", re.IGNORECASE)
SENTENCE_SPLIT = re.compile(r"(?<=[.!?])[\"”’)]?\s+(?=[A-Z0-9\"“(])")


def sentences(text: str) -> list[str]:
    """Sentences of the prose (headings skipped; each list item counts as one sentence)."""
    out: list[str] = []
    for block in re.split(r"\n\s*\n", text):
        for line in block.split("\n"):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            item = re.match(r"^(?:[-*]|\d+[.)])\s+(.*)$", line)
            if item:
                out.append(item.group(1).strip())
                continue
            out.extend(s.strip() for s in SENTENCE_SPLIT.split(line) if s.strip())
    return out


def stems(sentence: str) -> set[str]:
    words = re.findall(r"[a-z]{4,}", sentence.lower())
    return {w.rstrip("s")[:5] for w in words
            if w not in STOPWORDS and w not in NUMBER_WORDS and w.rstrip("s") not in UNITS}


@dataclass(frozen=True)
class Quantity:
    text: str  # the matched quantity, e.g. "nearly two months"
    core: str  # the number(s) and unit without the modifier, e.g. "two months"
    dimension: str
    low: float
    high: float
    sentence: int
    start: int  # offset of the match in the article text


@dataclass(frozen=True)
class Contradiction:
    first: Quantity
    second: Quantity
    shared: tuple[str, ...]

    def describe(self) -> str:
        return f"'{self.first.text}' vs '{self.second.text}' (both about {', '.join(self.shared)})"


def _number(token: str) -> float:
    token = token.lower().strip()
    if token in NUMBER_WORDS:
        return float(NUMBER_WORDS[token])
    return float(token.replace(",", ""))


def quantities(text: str) -> list[Quantity]:
    """Every ``number unit`` mention, normalised (time to hours), with its sentence index."""
    sents = sentences(text)
    found: list[Quantity] = []
    cursor = 0
    offsets: list[int] = []
    for s in sents:  # locate each sentence in the text to map matches back to sentences
        pos = text.find(s, cursor)
        offsets.append(pos if pos >= 0 else cursor)
        cursor = pos + len(s) if pos >= 0 else cursor
    for m in QUANTITY.finditer(text):
        unit = m.group("unit").lower()
        key = unit if unit in UNITS else unit.rstrip("s")
        dimension, scale = UNITS.get(key, ("", 1.0))
        if not dimension:
            continue
        a = _number(m.group("a"))
        b = _number(m.group("b")) if m.group("b") else a
        index = max((i for i, off in enumerate(offsets) if off <= m.start()), default=0)
        core = m.group(0)[m.start("a") - m.start():].strip()
        found.append(Quantity(text=m.group(0).strip(), core=core, dimension=dimension, low=min(a, b) * scale,
                              high=max(a, b) * scale, sentence=index, start=m.start()))
    return found


def _window(sentence: str, quantity: str, width: int) -> set[str]:
    """Content stems within ``width`` words either side of ``quantity`` in its sentence."""
    at = sentence.find(quantity)
    if at < 0:
        return stems(sentence)
    before = sentence[:at].split()[-width:]
    after = sentence[at + len(quantity):].split()[:width]
    return stems(" ".join(before + after))


def contradictions(text: str) -> list[Contradiction]:
    """Pairs of quantities of the same kind, in different sentences, about the same thing, whose
    ranges differ by a factor between 1.3 and 20 (a larger gap is almost always two different
    things, e.g. minutes of build time and weeks of work).

    "About the same thing" means a rare content word right next to both (within four words), or
    two rare content words near both (within twelve words) carrying enough weight (idf). A mention
    of a distribution's tail ("up to", "the longest") is not held against an average.
    """
    sents = sentences(text)
    df = Counter(st for s in sents for st in stems(s))
    n = max(len(sents), 1)
    rare_limit = max(3, n // 12)
    qs = quantities(text)
    found: list[Contradiction] = []
    flagged: set[int] = set()
    for i, q1 in enumerate(qs):
        for j in range(i + 1, len(qs)):
            q2 = qs[j]
            if j in flagged or q2.sentence == q1.sentence or q1.dimension != q2.dimension:
                continue
            if not q1.high or not q2.high:
                continue
            ratio = max(q2.low / q1.high, q1.low / q2.high)
            if not 1.3 < ratio < 20:
                continue
            s1, s2 = sents[q1.sentence], sents[q2.sentence]
            if TAIL.search(s1) or TAIL.search(s2):
                continue
            near = {st for st in _window(s1, q1.text, 4) & _window(s2, q2.text, 4) if df[st] <= rare_limit}
            wide = {st for st in _window(s1, q1.text, 12) & _window(s2, q2.text, 12) if df[st] <= rare_limit}
            weight = sum(math.log(n / df[st]) for st in wide)
            if near or (len(wide) >= 2 and weight >= 4.0):
                found.append(Contradiction(first=q1, second=q2, shared=tuple(sorted(near or wide))))
                flagged.add(j)
    return found


def conclusion(text: str) -> Section | None:
    body = [s for s in split_sections(text) if s.heading != LEAD]
    return body[-1] if body else None


def action_items(text: str) -> list[str]:
    """List items of the last section that start with an imperative verb."""
    last = conclusion(text)
    if last is None:
        return []
    items = []
    for line in last.text.split("\n"):
        m = re.match(r"^\s*(?:[-*]|\d+[.)])\s+\**([A-Za-z]+)", line)
        if not m:
            continue
        word = m.group(1).lower()
        if word in NOT_IMPERATIVE or word.endswith(("ing", "ed", "ly")):
            continue
        items.append(line.strip())
    return items


def topic_sentence_ratio(text: str) -> float:
    """Share of ``##`` sections whose first sentence shares a content word with the heading."""
    body = [s for s in split_sections(text) if s.heading != LEAD]
    if not body:
        return 0.0
    hits = 0
    for section in body:
        first = sentences(section.body)[:1]
        if first and stems(section.heading) & stems(first[0]):
            hits += 1
    return hits / len(body)


@dataclass
class Features:
    words: int
    sentences: int
    mean_sentence_words: float
    long_sentence_share: float
    hedges: int
    absolutes: int
    evidence: int
    counterpoints: int
    causal: int
    vague: int
    duplicates: int
    boilerplate: int
    contradictions: int
    actions: int
    timed_actions: int
    topic_sentences: float
    sections: int
    hedges_by_section: dict[str, int] = field(default_factory=dict)

    def per_1k(self, count: int) -> float:
        return 1000.0 * count / max(self.words, 1)


def boilerplate(text: str, *, n: int = 6, times: int = 3) -> int:
    """Distinct ``n``-word phrases that occur ``times`` or more: repeated stock phrasing."""
    words = re.findall(r"[a-z']+", text.lower())
    grams = Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
    return sum(1 for count in grams.values() if count >= times)


def measure(text: str) -> Features:
    sents = sentences(text)
    lengths = [word_count(s) for s in sents] or [0]
    normalized = Counter(re.sub(r"\W+", " ", s.lower()).strip() for s in sents if word_count(s) >= 5)
    items = action_items(text)
    body = [s for s in split_sections(text) if s.heading != LEAD]
    return Features(
        words=word_count(text),
        sentences=len(sents),
        mean_sentence_words=sum(lengths) / len(lengths),
        long_sentence_share=sum(1 for n in lengths if n > 30) / len(lengths),
        hedges=len(HEDGE.findall(text)),
        absolutes=len(ABSOLUTE.findall(text)),
        evidence=len(EVIDENCE.findall(text)),
        counterpoints=len(COUNTERPOINT.findall(text)),
        causal=len(CAUSAL.findall(text)),
        vague=len(VAGUE.findall(text)),
        duplicates=sum(n - 1 for n in normalized.values() if n > 1),
        boilerplate=boilerplate(text),
        contradictions=len(contradictions(text)),
        actions=len(items),
        timed_actions=sum(1 for i in items if TIME_BOUND.search(i)),
        topic_sentences=topic_sentence_ratio(text),
        sections=len(body),
        hedges_by_section={s.heading: len(HEDGE.findall(s.text)) for s in split_sections(text)},
    )
