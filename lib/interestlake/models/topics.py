"""Interest topics of one user from the texts they wrote (reviews, queries), numpy-free and deterministic.

Key phrases are the n-grams (up to three words) of the runs of content words between
stopwords and punctuation (the RAKE idea) in English; Chinese text is cut at punctuation and filler
words into segments of two to eight characters. Each phrase counts once per text,
weighted by recency: 2^(-(t_newest - t) / half_life). Phrases sharing a head word (the
last word, singular) form one topic, labelled by its heaviest phrase as the user wrote
it, so "guitar strings", "light gauge strings" and "strings" are one topic. A topic
counts once per text that names it; its weight is its share of the user's topic mass.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from interestlake.models.needs import STOPWORDS, ZH_FILLER, has_cjk, parse_need, singular

_SECONDS_PER_DAY = 86_400.0
_MAX_WORDS = 3
# Words of opinion and shopping that say nothing about what a user is into.
_GENERIC = frozenset(
    """great good nice love loved like liked awesome excellent perfect fine ok okay bad poor terrible awful better
    worse best worst product item thing things stuff bought purchase purchased order ordered buy would could should
    will can cannot don't doesn't didn't isn't wasn't won't just also much many well really quite pretty little bit
    lot lots use used using work works worked working star stars review time times day days year years month months
    way ever even still back got get gets make makes made need first two three recommend recommended happy money
    price value quality amazon seller shipping arrived came come comes does did done have has had was were been being
    am he she they them their there here then than when where while after before because since other another every
    each more most less least only own same such sure again about into over under out up down off all any both few
    no not nor now how why if but yes very too so""".split()
) | STOPWORDS
_SENTENCE = re.compile(r"[.!?;:,()\[\]\"/\n\r\t]+|\s-\s")
_TOKEN = re.compile(r"[a-z][a-z0-9'&-]*|\d+[a-z]+[a-z0-9]*")
_ZH_CUT = re.compile(rf"[^\u3400-\u9fff\uf900-\ufaff]+|(?:{ZH_FILLER}|很|非常|也|都|就|还|是|在|这|那|个|不|太|挺|真|好)+")


@dataclass(frozen=True)
class Topic:
    """One topic of one user."""

    label: str
    weight: float
    phrases: tuple[str, ...]
    mentions: int
    last_seen: float


def key_phrases(text: str) -> list[str]:
    """Candidate key phrases of one text, in order of appearance, each once.

    English phrases are the n-grams (up to three words) of each lower-cased run of
    content words; Chinese phrases are segments of two to eight characters.
    """
    phrases: list[str] = []
    lowered = (text or "").lower()
    for clause in _SENTENCE.split(lowered):
        run: list[str] = []
        for token in _TOKEN.findall(clause) + [""]:
            word = token.strip("'-&")
            if word and word not in _GENERIC and singular(word) not in _GENERIC and len(word) > 2:
                run.append(word)
                continue
            # Every n-gram of the run, so that "light gauge strings" also counts for "strings".
            for size in range(1, _MAX_WORDS + 1):
                phrases += [" ".join(run[start:start + size]) for start in range(len(run) - size + 1)]
            run = []
    if has_cjk(lowered):
        phrases += [segment for segment in _ZH_CUT.split(lowered) if 2 <= len(segment) <= 8]
    return list(dict.fromkeys(phrases))


def head(phrase: str) -> str:
    """The key grouping phrases into topics: the last word, singular (a Chinese segment is its own key)."""
    if has_cjk(phrase):
        return phrase
    return singular(phrase.rsplit(" ", 1)[-1])


def user_topics(
    texts: Iterable[tuple[float, str] | tuple[float, str, bool]], half_life_days: float, max_topics: int
) -> list[Topic]:
    """The topics of one user's texts.

    Args:
        texts: (epoch seconds, text[, is a query]) of each review or query the user wrote; a
            query counts without its constraints ("strings under $20" as "strings", and
            "不要苹果" not as 苹果).
        half_life_days: A text's weight halves every this many days before the newest text.
        max_topics: Topics kept, heaviest first.

    Returns:
        Topics, heaviest first (ties by label); weights are shares of all the user's
        phrase mass, so the kept ones sum to at most 1. Empty when no phrase was found.
    """
    texts = [(float(ts), parse_need(text).subject if query else text)
             for ts, text, query in ((*entry, False)[:3] for entry in texts) if text and text.strip()]
    if not texts:
        return []
    newest = max(ts for ts, _ in texts)
    groups: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    mentions: dict[str, set[int]] = defaultdict(set)
    last_seen: dict[str, float] = {}
    group_weight: dict[str, float] = defaultdict(float)
    for index, (ts, text) in enumerate(texts):
        decay = 2.0 ** (-(newest - ts) / _SECONDS_PER_DAY / half_life_days)
        keys = set()
        for phrase in key_phrases(text):
            key = head(phrase)
            groups[key][phrase] += decay
            keys.add(key)
        # A topic counts once per text, however many of its phrases the text holds.
        for key in keys:
            group_weight[key] += decay
            mentions[key].add(index)
            last_seen[key] = max(last_seen.get(key, ts), ts)
    total = sum(group_weight.values())
    if total <= 0:
        return []
    topics = []
    for key, phrases in groups.items():
        # The label: the heaviest phrase; on a tie two words win ("guitar strings" over
        # "strings" and over "acoustic guitar strings").
        ranked = sorted(phrases.items(), key=lambda item: (-round(item[1], 9), abs(len(item[0].split()) - 2), item[0]))
        topics.append(Topic(ranked[0][0], group_weight[key] / total, tuple(p for p, _ in ranked[:10]),
                            len(mentions[key]), last_seen[key]))
    topics.sort(key=lambda topic: (-topic.weight, topic.label))
    return topics[:max_topics]
