"""Reasons in the user's own terms: the query, history entry, rating or topic behind an item.

The one reason writer of the recommend stage, whatever scored the items.

Template-based, in Chinese where the evidence (the query or the history entry's label)
is Chinese, else English. The evidence, in order: the fresh need that placed the item
("Matches your search "light gauge strings""); the item itself in the recent history; the liked
recent entry closest to it, with the user's rating when they rated that item ("Similar to
"Fender picks", which you rated 5 stars"); a topic of the user's whose head word the item
names; else a generic line. "Matches your search" is said only of an item a fresh need placed,
which meets all of that need's bounds and exclusions: a past search in the history is never
evidence (the item may fail its constraints), and neither is a disliked entry.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from interestlake import constants as C
from interestlake.models.needs import Need, has_cjk, words
from interestlake.models.topics import head

_LABEL_LIMIT = 80
REASON_TEMPLATES = {
    C.EVENT_VIEW: 'Similar to "{label}", which you viewed',
    C.EVENT_CLICK: 'Similar to "{label}", which you looked at',
    C.EVENT_CART: 'Similar to "{label}" in your cart',
    C.EVENT_PURCHASE: 'Goes with "{label}", which you bought',
    C.EVENT_RATE: 'Similar to "{label}", which you rated',
    C.EVENT_REVIEW: 'Similar to "{label}", which you reviewed',
    C.EVENT_SEARCH: 'Matches your search "{label}"',
}
# When the recommended item itself is in the recent history (viewed, not bought).
SAME_ITEM_TEMPLATES = {
    C.EVENT_VIEW: "You viewed this recently",
    C.EVENT_CLICK: "You looked at this recently",
    C.EVENT_CART: "Still in your cart",
    C.EVENT_RATE: "You rated this",
}
FALLBACK_REASON = "Matches your interests"
ZH_TEMPLATES = {
    C.EVENT_VIEW: '与您浏览过的"{label}"相似',
    C.EVENT_CLICK: '与您看过的"{label}"相似',
    C.EVENT_CART: '与您购物车中的"{label}"相似',
    C.EVENT_PURCHASE: '与您购买的"{label}"搭配',
    C.EVENT_RATE: '与您评分过的"{label}"相似',
    C.EVENT_REVIEW: '与您评价过的"{label}"相似',
    C.EVENT_SEARCH: '符合您的搜索"{label}"',
}
ZH_SAME_ITEM = {C.EVENT_VIEW: "您最近浏览过", C.EVENT_CLICK: "您最近看过", C.EVENT_CART: "仍在您的购物车中",
                C.EVENT_RATE: "您评分过"}
RATED = {"en": 'Similar to "{label}", which you rated {stars} stars', "zh": '与您评为{stars}星的"{label}"相似'}
TOPIC = {"en": 'Matches your interest in "{label}"', "zh": '符合您对"{label}"的兴趣'}
ZH_FALLBACK = "符合您的兴趣"


def _short(label: str) -> str:
    label = (label or "").strip()
    return label if len(label) <= _LABEL_LIMIT else label[: _LABEL_LIMIT - 1].rstrip() + "…"


def explain(item_id: str, item_vector: np.ndarray, item_text: str, item_price: float, need: Need | None, *evidence) -> str:
    """The reason line of one item: ``ReasonWriter(*evidence)(item_id, ...)``, for a one-off line."""
    return ReasonWriter(*evidence)(item_id, item_vector, item_text, item_price, need)


class ReasonWriter:
    """One user's reason lines: the evidence is prepared once per user, then each listed item costs one product.

    Args:
        history_vectors: The user's recent entries' vectors, newest first, shape (m, d).
        kinds: Their kinds (``dislike`` entries are skipped).
        labels: Their labels (item title or query text).
        history_items: Their item ids (None for queries).
        ratings: The user's latest rating of each item they rated.
        topics: The user's topic labels, heaviest first.
    """

    def __init__(
        self,
        history_vectors: np.ndarray,
        kinds: Sequence[str],
        labels: Sequence[str | None],
        history_items: Sequence[str | None],
        ratings: Mapping[str, float],
        topics: Sequence[str],
    ):
        self.history = np.asarray(history_vectors)
        self.kinds, self.labels, self.items = list(kinds), list(labels), list(history_items)
        self.ratings, self.topics = ratings, topics
        # Most histories hold no Chinese at all: one look at all labels spares one per entry.
        self.chinese = chinese = has_cjk("".join(label or "" for label in labels))
        # The newest same-item entry wins, as the history is newest first.
        self.same_item: dict[str, str] = {}
        for kind, seen, label in zip(kinds, history_items, labels):
            if kind in SAME_ITEM_TEMPLATES and seen is not None and seen not in self.same_item:
                self.same_item[seen] = (ZH_SAME_ITEM if chinese and has_cjk(label or "") else SAME_ITEM_TEMPLATES)[kind]
        self.liked = [i for i, kind in enumerate(kinds)
                      if kind not in (C.EVENT_DISLIKE, C.EVENT_SEARCH) and (labels[i] or "").strip()]
        self.fallback = ZH_FALLBACK if chinese else FALLBACK_REASON

    def many(self, item_ids: Sequence[str], vectors: np.ndarray, texts: Sequence[str], prices: Sequence[float],
             needs: Sequence[Need | None]) -> list[str]:
        """The reason lines of a whole list (the arguments of ``__call__``, one per item).

        Every item's closest liked entry comes from one product.
        """
        closest = [None] * len(item_ids)
        if self.liked and len(self.history) and len(item_ids):
            rows = np.argmax(self.history[self.liked] @ np.asarray(vectors).T, axis=0)
            closest = [self.liked[row] for row in rows.tolist()]
        return [self(*args) for args in zip(item_ids, vectors, texts, prices, needs, closest)]

    def __call__(self, item_id: str, item_vector: np.ndarray, item_text: str, item_price: float, need: Need | None,
                 closest: int | None = None) -> str:
        """The reason line of one listed item.

        Args:
            item_id: The item.
            item_vector: Its unit vector.
            item_text: Its lower-cased ``title. category. description``.
            item_price: Its price (nan: unknown).
            need: The fresh need that placed it, whose constraints it meets (None: an interest did).
            closest: The liked entry closest to the item, when already known (``many``).
        """
        # The writer checks the claim itself: a need's line only for an item meeting its constraints.
        if need is not None and need.allows(item_price, item_text):
            template = ZH_TEMPLATES if need.lang == "zh" else REASON_TEMPLATES
            return template[C.EVENT_SEARCH].format(label=_short(need.text))
        if item_id in self.same_item:
            return self.same_item[item_id]
        liked = self.liked
        if liked and len(self.history):
            best = closest if closest is not None else liked[int(np.argmax(self.history[liked] @ item_vector))]
            label, kind = _short(self.labels[best]), self.kinds[best]
            lang = "zh" if self.chinese and has_cjk(label) else "en"
            rating = self.ratings.get(self.items[best]) if self.items[best] is not None else None
            if kind in (C.EVENT_RATE, C.EVENT_REVIEW) and rating is not None:
                return RATED[lang].format(label=label, stars=f"{rating:g}")
            template = (ZH_TEMPLATES if lang == "zh" else REASON_TEMPLATES).get(kind)
            if template:
                return template.format(label=label)
        if self.topics:
            item_words = set(words(item_text))
            for topic in self.topics:
                # A topic is its head word ("strings" of "guitar strings"): the item must name it.
                if (has_cjk(topic) and topic in item_text) or (not has_cjk(topic) and head(topic) in item_words):
                    return TOPIC["zh" if has_cjk(topic) else "en"].format(label=_short(topic))
        return self.fallback
