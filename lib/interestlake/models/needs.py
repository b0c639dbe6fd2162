"""Typed needs: a search query parsed into constraints, deterministically (English and Chinese).

"acoustic guitar strings under $20" -> price <= 20, words (acoustic, guitar, string);
"gift for a guitarist, not too expensive" -> cheap, words (guitarist);
"a phone, not Apple" -> words (phone), excluded ("apple");
"1000元以下的手机" -> price <= 1000, words (手机); "不要苹果" -> excluded ("苹果").

Rules run in a fixed order on the lower-cased text (price ranges, upper and lower bounds,
"around", the soft "cheap", negations), each removing what it matched, and the words left
are the need's terms. No model is involved, so the same text always gives the same need.
"""

from __future__ import annotations

import bisect
import functools
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_CURRENCY = r"(?:[$€£¥￥]\s*)?"
_NUMBER = r"(\d+(?:[.,]\d+)?)\s*(k)?"
_UNIT = r"(?:\s*(?:dollars?|bucks|usd|eur|euros?|gbp|pounds?|yuan|rmb|元|块钱|块))?"
_AMOUNT = _CURRENCY + _NUMBER + _UNIT
# Chinese numerals as used in prices ("两千", "一千五", "五百").
_ZH_DIGITS = {"零": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
_ZH_UNITS = {"十": 10, "百": 100, "千": 1000, "万": 10000}
_ZH_NUMBER = re.compile(r"[零一二两三四五六七八九十百千万]+")

_RANGE = [
    re.compile(rf"\bbetween\s+{_AMOUNT}\s+and\s+{_AMOUNT}"),
    re.compile(rf"\bfrom\s+{_AMOUNT}\s+to\s+{_AMOUNT}"),
    re.compile(rf"{_AMOUNT}\s*(?:-|–|~|to|到|至)\s*{_AMOUNT}"),
]
_MAX = [
    re.compile(rf"(?:\bunder|\bbelow|\bless than|\bcheaper than|\bat most|\bup to|\bno more than|\bnot more than"
               rf"|\bmax(?:imum)?|\bwithin|\bbudget(?: of)?|<=?|低于|少于|不超过|不到|小于|最多|预算)\s*{_AMOUNT}"),
    re.compile(rf"{_AMOUNT}\s*(?:or less|or under|or below|max\b|以下|以内|之内|内)"),
]
_MIN = [
    re.compile(rf"(?:\bover|\babove|\bmore than|\bat least|\bmin(?:imum)?|\bstarting at|>=?|高于|超过|大于|至少|不低于)"
               rf"\s*{_AMOUNT}"),
    re.compile(rf"{_AMOUNT}\s*(?:or more|and up|plus\b|\+|以上)"),
]
_AROUND = [
    re.compile(rf"(?:\baround|\babout|\broughly|~|大约|大概)\s*{_AMOUNT}"),
    re.compile(rf"{_AMOUNT}\s*(?:左右|上下)"),
]
_CHEAP = re.compile(
    r"\bnot (?:too |very |that |so )?(?:expensive|pricey|costly)\b|\b(?:cheap|cheaper|inexpensive|affordable|budget|"
    r"low[- ]cost|bargain)\b|(?:别|不要|不能)太贵|不贵|便宜|实惠|性价比高|平价"
)
_NEGATION_EN = re.compile(
    r"\b(?:not|no|except|without|excluding|other than|anything but|non)[- ]+"
    r"(?!too\b|very\b|more\b|less\b|over\b|under\b|above\b|below\b|than\b|a\b|an\b|the\b)([a-z0-9][\w&'-]*)"
)
_NEGATION_ZH = re.compile(r"(?:不要|不想要|别要|除了|不是|非)\s*([\u4e00-\u9fffa-z0-9]+?)(?:的|[，,。；;、\s]|以外|之外|$)")
_WORD = re.compile(r"[a-z0-9][a-z0-9'&-]*")
# Chinese function words and filler between the words of a query.
ZH_FILLER = r"一点儿?|一下|一个|一款|一些|适合|推荐|想要|需要|[的了和与及给买要想找有吗呢我送用]"
_ZH_SPLIT = re.compile(rf"[^\u3400-\u9fff\uf900-\ufaffa-z0-9]+|(?:{ZH_FILLER})+")
STOPWORDS = frozenset(
    """a an the for with and or of to in on at by my me i we our you your some something any anything want wants
    need needs needed looking look find buy buying get gift gifts present idea ideas good best nice great new
    please recommend recommendation cheap price priced prices dollar dollars bucks usd eur euro euros gbp pound
    pounds yuan rmb that this these those is are be which what who it its one ones like as so very too really""".split()
)


def has_cjk(text: str) -> bool:
    """True when the text holds Chinese (CJK) characters."""
    return bool(_CJK.search(text or ""))


def singular(word: str) -> str:
    """Crude English singular, enough to match "strings" with "string" (never changes short words)."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def words(text: str) -> list[str]:
    """Lower-cased singular English words of a text (the tokens terms are matched against)."""
    return [singular(w.strip("'-")) for w in _WORD.findall((text or "").lower()) if w.strip("'-")]


@dataclass(frozen=True)
class Need:
    """Constraints parsed from one query.

    Attributes:
        text: The query as written (echoed in reasons).
        lang: ``zh`` when the query has Chinese characters, else ``en``.
        price_min: Lower price bound, inclusive (None: none).
        price_max: Upper price bound, inclusive (None: none).
        cheap: A soft wish for low prices ("not too expensive", "便宜").
        terms: What is wanted: English singular words, or Chinese segments.
        excluded: Words an item must not contain ("apple" of "not Apple", "苹果" of "不要苹果").
        subject: The query without its constraints ("acoustic guitar strings"), as written.
    """

    text: str
    lang: str
    price_min: float | None = None
    price_max: float | None = None
    cheap: bool = False
    terms: tuple[str, ...] = ()
    excluded: tuple[str, ...] = ()
    subject: str = ""

    @property
    def constrained(self) -> bool:
        """True when the query carries any constraint beyond its words."""
        return self.price_min is not None or self.price_max is not None or self.cheap or bool(self.excluded)

    def allows(self, price: float | None, item_text: str) -> bool:
        """True when an item meets the hard constraints (price bounds, exclusions).

        An item without a known price does not meet a price bound: it cannot be shown to.
        """
        if self.price_min is not None or self.price_max is not None:
            if price is None or math.isnan(price):
                return False
            if self.price_min is not None and price < self.price_min:
                return False
            if self.price_max is not None and price > self.price_max:
                return False
        return not self.excludes(item_text)

    def allows_each(self, prices: np.ndarray, item_texts: Sequence[str]) -> np.ndarray:
        """``allows`` of many items at once (prices as a float array, nan: unknown), as a bool array."""
        prices = np.asarray(prices, dtype=np.float64)
        allowed = np.ones(len(prices), dtype=bool)
        if self.price_min is not None or self.price_max is not None:
            with np.errstate(invalid="ignore"):
                allowed &= ~np.isnan(prices)
                if self.price_min is not None:
                    allowed &= prices >= self.price_min
                if self.price_max is not None:
                    allowed &= prices <= self.price_max
        if self.excluded:
            allowed &= ~np.array([self.excludes(text) for text in item_texts], dtype=bool)
        return allowed

    def excludes(self, item_text: str) -> bool:
        """True when an item's text names one of the words the query excludes ("not Apple")."""
        return bool(self.excluded) and any(_contains(item_text, word) for word in self.excluded)

    def term_match(self, item_text: str) -> float:
        """Share of the need's terms found in an item's text (0 when the need has none)."""
        if not self.terms:
            return 0.0
        pattern, chinese = _terms_pattern(self.terms)
        if pattern is None:
            return sum(_contains(item_text, term) for term in self.terms) / len(self.terms)
        found = set(pattern.findall(item_text))
        return sum(term in item_text if zh else term in found for term, zh in zip(self.terms, chinese)) / len(self.terms)

    def term_matches(self, item_texts: Sequence[str]) -> np.ndarray:
        """``term_match`` of many texts at once: one search over them all instead of one call per text."""
        out = np.zeros(len(item_texts))
        if not self.terms or not len(item_texts):
            return out
        pattern, chinese = _terms_pattern(self.terms)
        if pattern is None:
            return np.array([self.term_match(text) for text in item_texts])
        # The texts joined by a separator no term contains and the word bounds treat as a text's end.
        joined = "\n".join(item_texts)
        starts = np.cumsum([0] + [len(text) + 1 for text in item_texts[:-1]]).tolist()
        found: dict[int, set[str]] = {}
        for match in pattern.finditer(joined):
            found.setdefault(bisect.bisect_right(starts, match.start()) - 1, set()).add(match.group(1))
        for term in (term for term, zh in zip(self.terms, chinese) if zh):
            position = joined.find(term)
            while position >= 0:
                found.setdefault(bisect.bisect_right(starts, position) - 1, set()).add(term)
                position = joined.find(term, position + 1)
        for row, terms in found.items():
            out[row] = sum(term in terms for term in self.terms) / len(self.terms)
        return out

    def describe(self) -> str:
        """The parsed constraints in one line, for logs and tests."""
        parts = []
        if self.price_min is not None:
            parts.append(f"price >= {self.price_min:g}")
        if self.price_max is not None:
            parts.append(f"price <= {self.price_max:g}")
        if self.cheap:
            parts.append("cheap")
        if self.excluded:
            parts.append("not " + "/".join(self.excluded))
        if self.terms:
            parts.append("about " + " ".join(self.terms))
        return "; ".join(parts)


def _contains(item_text: str, word: str) -> bool:
    """Whether a lower-cased item text names a word: a substring for Chinese, a whole (singular) word otherwise."""
    pattern = _word_pattern(word)
    return word in item_text if pattern is None else pattern.search(item_text) is not None


@functools.lru_cache(maxsize=4096)
def _word_pattern(word: str) -> re.Pattern | None:
    """The whole-word pattern of an English word (None for Chinese), compiled once: needs test it per candidate."""
    if has_cjk(word):
        return None
    return re.compile(rf"(?<![a-z0-9]){re.escape(word)}(?:s|es)?(?![a-z0-9])")


@functools.lru_cache(maxsize=4096)
def _terms_pattern(terms: tuple[str, ...]) -> tuple[re.Pattern | None, tuple[bool, ...]]:
    """One pattern finding any of a need's English terms as whole words, and which terms are Chinese.

    One search per candidate instead of one per term. The pattern is None when one term
    starts another ("bass", "bassoon"), where one match could hide the other, or a term has
    inner punctuation ("hi-fi", whose parts may be terms too): each term is then searched
    on its own.
    """
    chinese = tuple(has_cjk(term) for term in terms)
    english = sorted({term for term, zh in zip(terms, chinese) if not zh})
    if any(b.startswith(a) for a, b in zip(english, english[1:])) or not all(t.isalnum() for t in english):
        return None, chinese
    alternatives = "|".join(re.escape(term) for term in english) or "(?!)"
    return re.compile(rf"(?<![a-z0-9])({alternatives})(?:s|es)?(?![a-z0-9])"), chinese


def _amount(number: str, thousands: str | None) -> float:
    value = float(number.replace(",", "")) if number.count(",") == 1 and len(number.split(",")[1]) == 3 else float(
        number.replace(",", "."))
    return value * 1000 if thousands else value


def _zh_numeral(text: str) -> int | None:
    """The value of a Chinese numeral such as 两千 (2000), 一千五 (1500), 五百 (500); None when it is none."""
    total, current, last_unit = 0, 0, 1
    for char in text:
        if char in _ZH_DIGITS:
            current = _ZH_DIGITS[char]
        elif char in _ZH_UNITS:
            unit = _ZH_UNITS[char]
            total += (current or 1) * unit
            current, last_unit = 0, unit
        else:
            return None
    if current:
        # "一千五" is 1500: a trailing digit counts in the next lower unit.
        total += current * (last_unit // 10 if last_unit >= 10 and len(text) > 1 and text[-2] in _ZH_UNITS else 1)
    return total or None


def _arabic(text: str) -> str:
    """Replaces Chinese numerals followed by a price context with digits, so one set of rules reads both."""
    def replace(match: re.Match) -> str:
        value = _zh_numeral(match.group(0))
        return str(value) if value is not None and value >= 10 else match.group(0)

    return _ZH_NUMBER.sub(replace, text)


def _take(patterns: Iterable[re.Pattern], text: str) -> tuple[list[float] | None, str]:
    """The amounts of the first pattern that matches, and the text without the match."""
    for pattern in patterns:
        match = pattern.search(text)
        if match:
            groups = match.groups()
            amounts = [_amount(groups[i], groups[i + 1]) for i in range(0, len(groups), 2) if groups[i] is not None]
            return amounts, text[: match.start()] + " " + text[match.end():]
    return None, text


# Kept per text (a Need is immutable): a block of users often carries the same popular searches.
@functools.lru_cache(maxsize=4096)
def parse_need(text: str) -> Need:
    """Parses a query into a ``Need``.

    Args:
        text: A search query or a typed need, English or Chinese.

    Returns:
        The need; a query without constraints has only ``terms``.
    """
    original = (text or "").strip()
    rest = _arabic(original.lower())
    price_min = price_max = None
    amounts, rest = _take(_RANGE, rest)
    if amounts and len(amounts) == 2:
        price_min, price_max = sorted(amounts)
    else:
        amounts, rest = _take(_MAX, rest)
        if amounts:
            price_max = amounts[0]
        amounts, rest = _take(_MIN, rest)
        if amounts:
            price_min = amounts[0]
        if price_min is None and price_max is None:
            amounts, rest = _take(_AROUND, rest)
            if amounts:
                price_min, price_max = round(amounts[0] * 0.8, 2), round(amounts[0] * 1.2, 2)
    cheap = bool(_CHEAP.search(rest))
    rest = _CHEAP.sub(" ", rest)
    excluded = []
    for pattern, single in ((_NEGATION_ZH, False), (_NEGATION_EN, True)):
        for match in pattern.finditer(rest):
            word = singular(match.group(1)) if single else match.group(1)
            if word and word not in excluded:
                excluded.append(word)
        rest = pattern.sub(" ", rest)
    subject = " ".join(re.sub(rf"^(?:{ZH_FILLER}|[\s,，。;；、])+|(?:{ZH_FILLER}|[\s,，。;；、])+$", "", rest).split())
    return Need(original, "zh" if has_cjk(original) else "en", price_min, price_max, cheap,
                tuple(_terms(rest)), tuple(excluded), subject)


def _terms(rest: str) -> list[str]:
    """Content words left after the constraints: English singular words without stopwords, Chinese segments."""
    terms: list[str] = []
    for segment in _ZH_SPLIT.split(rest):
        if not segment:
            continue
        if has_cjk(segment):
            # Mixed runs ("iphone手机") keep their Latin part as a word of its own.
            for part in re.split(r"([a-z0-9]+)", segment):
                if part and (has_cjk(part) or part not in STOPWORDS) and not part.isdigit():
                    terms.append(part if has_cjk(part) else singular(part))
            continue
        for word in words(segment):
            if word not in STOPWORDS and not word.replace(".", "").isdigit() and len(word) > 1:
                terms.append(word)
    return list(dict.fromkeys(terms))
