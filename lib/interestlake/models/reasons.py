"""Reasons in the user's own terms: the query, history entry, rating or topic behind an item.

The one reason writer of the recommend stage, whatever scored the items.

Template-based, in Chinese where the evidence (the query or the history entry's label)
is Chinese, else English. The evidence, in order: the fresh need that placed the item
("Matches your search "light gauge strings""); the item itself in the recent history; the liked
recent entry closest to it, when it is close (cosine at least
``recommend.reason_min_similarity``), with the user's rating when they rated that item
("Similar to "Fender picks", which you rated 5 stars"); a topic of the user's whose head word
the item names; else a generic line. An item the user rated low (at most
``steer.negative.max_rating``) is never the evidence, whether or not negative feedback is on
for the scoring: "Similar to "X", which you rated 1 star" would recommend by what the user said
they did not like. Of several entries of one item, the newest speaks for it (a review apart:
its vector is its text's). "Matches your search" is said only of an item a fresh need placed,
which meets all of that need's bounds and exclusions: a past search in the history is never
evidence (the item may fail its constraints), and neither is a disliked entry.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from itertools import chain

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from interestlake import constants as C
from interestlake.models.needs import Need, has_cjk, words
from interestlake.models.topics import head
from interestlake.settings import RecommendSettings, SteerNegativeSettings

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
# Entries that are never evidence for an item.
_NOT_EVIDENCE_KINDS = pa.array(sorted({C.EVENT_DISLIKE, C.EVENT_SEARCH}), pa.string())
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
RATED = {"en": 'Similar to "{label}", which you rated {stars}', "zh": '与您评为{number}星的"{label}"相似'}
TOPIC = {"en": 'Matches your interest in "{label}"', "zh": '符合您对"{label}"的兴趣'}
ZH_FALLBACK = "符合您的兴趣"
# The settings' defaults, for a writer built outside the stage (``explain``); the stage passes its own.
_LOW_RATING = SteerNegativeSettings.model_fields["max_rating"].default
_MIN_SIMILARITY = RecommendSettings.model_fields["reason_min_similarity"].default


def _short(label: str) -> str:
    label = (label or "").strip()
    return label if len(label) <= _LABEL_LIMIT else label[: _LABEL_LIMIT - 1].rstrip() + "…"


def explain(item_id: str, item_vector: np.ndarray, item_text: str, item_price: float, need: Need | None, *evidence) -> str:
    """The reason line of one item for one user's evidence, for a one-off line.

    ``evidence``: the user's (history vectors (m, d), kinds, labels, history items, ratings, topics).
    """
    history, kinds, labels, items, ratings, topics = evidence
    writer = ReasonWriter(np.asarray(history), [len(kinds)], [kinds], [labels], [items], [ratings], [topics])
    return writer.write([[item_id]], np.asarray(item_vector)[None, :], [[item_text]], [[item_price]], [[need]])[0][0]


class ReasonWriter:
    """The reason lines of a block of users' lists: the one reason writer of the recommend stage.

    Each user's evidence is prepared once; every listed item's closest liked entry comes
    from one product per user (``_closest``), then each line is one template.

    Args:
        history: Every user's recent entries' vectors, user after user, each newest first, shape (n, d);
            with ``entry_rows``, the array those rows index instead (e.g. the item matrix).
        lengths: Entries of each user (rows of ``history``, or of ``entry_rows``).
        kinds: Per user, the entries' kinds (``dislike`` and ``search`` entries are never evidence).
        labels: Per user, the entries' labels (item title or query text).
        history_items: Per user, the entries' item ids (None for queries).
        ratings: Per user, their latest rating of each item they rated.
        topics: Per user, their topic labels, heaviest first.
        flat: The same kinds, labels and item ids as three Arrow string arrays, user after
            user, when the caller has them (the scorer's user block): spares building them here.
        entry_rows: Each entry's row of ``history``, user after user (None: entry i is row i). A
            block whose entries are all catalog items passes the item matrix and the items'
            keys: each user's few rows are gathered where their product needs them, instead of
            the block's every entry into one array first.
        low_rating: An item rated at most this (``steer.negative.max_rating``) is never evidence,
            in any of its entries; None: every rating may be.
        min_similarity: An entry speaks for a listed item only when their cosine (the
            product of the unit vectors) is at least this (``recommend.reason_min_similarity``).
    """

    def __init__(
        self,
        history: np.ndarray,
        lengths: Sequence[int],
        kinds: Sequence[Sequence[str]],
        labels: Sequence[Sequence[str | None]],
        history_items: Sequence[Sequence[str | None]],
        ratings: Sequence[Mapping[str, float]],
        topics: Sequence[Sequence[str]],
        flat: tuple[pa.Array, pa.Array, pa.Array] | None = None,
        entry_rows: np.ndarray | None = None,
        low_rating: float | None = _LOW_RATING,
        min_similarity: float = _MIN_SIMILARITY,
    ):
        self.history = np.asarray(history, dtype=np.float32)
        self.min_similarity = min_similarity
        self.entry_rows = None if entry_rows is None else np.asarray(entry_rows, dtype=np.int64)
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.offsets = np.r_[0, np.cumsum(self.lengths)][:-1].astype(np.int64)
        self.kinds, self.labels, self.items = kinds, labels, history_items
        self.ratings, self.topics = ratings, topics
        # Most blocks hold no Chinese at all: one look at every label spares one per user.
        any_chinese = has_cjk("".join(label for user_labels in labels for label in user_labels if label))
        self.chinese = [any_chinese and has_cjk("".join(label or "" for label in user_labels)) for user_labels in labels]
        # Per user, the items they rated low: none of their entries speaks for a listed item.
        low = [{item for item, value in rated.items() if value is not None and value <= low_rating}
               if rated and low_rating is not None else None for rated in ratings]
        # Per user, item -> its newest entry of a same-item kind (the history is newest first, so
        # walking it backwards lets the newest overwrite).
        self.same_item = [
            {seen: i for i, kind, seen in zip(range(len(user_kinds) - 1, -1, -1), reversed(user_kinds), reversed(user_items))
             if kind in SAME_ITEM_TEMPLATES and seen is not None}
            for user_kinds, user_items in zip(kinds, history_items)
        ]
        for same, user_low in zip(self.same_item, low):
            for item in user_low or ():
                same.pop(item, None)
        # Entries that may be evidence (not disliked, not a search, with a label), as rows of
        # ``history``: computed over every user's entries at once (Arrow, not a Python test per entry).
        if flat is None:
            flat = tuple(pa.array(list(chain.from_iterable(lists)), pa.string()) for lists in (kinds, labels, history_items))
        flat_kinds, flat_labels, flat_items = flat
        evidence = pc.and_(pc.invert(pc.is_in(flat_kinds, value_set=_NOT_EVIDENCE_KINDS)),
                           pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(flat_labels)), 0))
        evidence = pc.fill_null(evidence, False).to_numpy(zero_copy_only=False).copy()
        for u, user_low in enumerate(low):
            if user_low:
                start = self.offsets[u]
                evidence[[start + i for i, item in enumerate(history_items[u]) if item in user_low]] = False
        if evidence.any():
            self._drop_repeats(evidence, flat_kinds, flat_items)
        self.liked = np.flatnonzero(evidence) if len(self.history) else np.zeros(0, np.int64)

    def _drop_repeats(self, evidence: np.ndarray, kinds: pa.Array, items: pa.Array) -> None:
        """Of a user's evidence entries of one item, keeps the newest (a review, its text's vector, apart).

        They all carry the item's vector, so exactly they tie and the newest (first) wins; but a
        batched product may put its one-ulp noise on any of them, depending on the block's shape
        (how users were partitioned), and the line ("viewed" or "in your cart") with it.
        """
        codes = pc.fill_null(pc.dictionary_encode(items).indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
        review = pc.fill_null(pc.equal(kinds, C.EVENT_REVIEW), False).to_numpy(zero_copy_only=False)
        rows = np.flatnonzero(evidence & (codes >= 0))
        owner = np.repeat(np.arange(len(self.lengths), dtype=np.int64), self.lengths)[rows]
        key = (owner * (int(codes.max()) + 1) + codes[rows]) * 2 + review[rows]
        # np.unique's first index of each key is the newest entry (each user's entries are newest first).
        first = np.zeros(len(rows), dtype=bool)
        first[np.unique(key, return_index=True)[1]] = True
        evidence[rows[~first]] = False

    def write(
        self,
        item_ids: Sequence[Sequence[str]],
        vectors: np.ndarray,
        texts: Sequence[Sequence[str]],
        prices: Sequence[Sequence[float]],
        needs: Sequence[Sequence[Need | None]],
    ) -> list[list[str]]:
        """Per user, the reason line of each listed item.

        Args:
            item_ids: Per user, the listed items.
            vectors: The listed items' unit vectors, user after user, shape (listed, d).
            texts: Per user, their lower-cased ``title. category. description``.
            prices: Per user, their prices (nan: unknown).
            needs: Per user, the fresh need that placed each item (None: an interest did).
        """
        closest = self._closest([len(ids) for ids in item_ids], vectors)
        out = []
        for u, ids in enumerate(item_ids):
            # A user's items often share their closest entry, whose line is the same for each.
            same, entry_lines, lines, topic_lines = self.same_item[u], {}, [], None
            for item_id, text, price, need, entry in zip(ids, texts[u], prices[u], needs[u], closest[u]):
                # The writer checks the claim itself: a need's line only for an item meeting its constraints.
                if need is not None and need.allows(price, text):
                    template = ZH_TEMPLATES if need.lang == "zh" else REASON_TEMPLATES
                    lines.append(template[C.EVENT_SEARCH].format(label=_short(need.text)))
                    continue
                seen = same.get(item_id)
                if seen is not None:
                    chinese = self.chinese[u] and has_cjk(self.labels[u][seen] or "")
                    lines.append((ZH_SAME_ITEM if chinese else SAME_ITEM_TEMPLATES)[self.kinds[u][seen]])
                    continue
                line = None
                if entry is not None:
                    if entry not in entry_lines:
                        entry_lines[entry] = self._entry_line(u, entry)
                    line = entry_lines[entry]
                if line is None:
                    if topic_lines is None:
                        topic_lines = self._topic_lines(u)
                    line = _topic_line(topic_lines, text, self.chinese[u])
                lines.append(line)
            out.append(lines)
        return out

    def _closest(self, listed: Sequence[int], vectors: np.ndarray) -> list[list[int | None]]:
        """Per user and listed item, the index of the liked entry closest to it in the user's history.

        None where the user has no liked entry, or the closest is under ``min_similarity``.

        Each user's product is of their listed items and their liked entries alone, so its
        rounding (and a near tie's winner) does not depend on which users share the block.
        The users of one shape (listed items, liked entries) are stacked into one
        ``matmul``, which makes the same BLAS call for each of them as a product of their
        own would (the same shape: the same sums), without a Python step per user. (Padding
        every user to the block's longest history instead cost 3x as long, and would make
        a user's sums depend on the block.)
        """
        out: list[list[int | None]] = [[None] * n for n in listed]
        if not len(self.liked) or not sum(listed):
            return out
        vectors = np.asarray(vectors, dtype=np.float32)
        listed = np.asarray(listed, dtype=np.int64)
        owner = np.searchsorted(self.offsets, self.liked, side="right") - 1
        bounds = np.searchsorted(owner, np.arange(len(listed) + 1))
        entries = np.diff(bounds)
        starts = np.r_[0, np.cumsum(listed)][:-1]
        users = np.flatnonzero((listed > 0) & (entries > 0))
        shapes = listed[users] * (int(entries.max()) + 1) + entries[users]
        for shape in np.unique(shapes).tolist():
            same_shape = users[shapes == shape]
            # A few users at a time, so that their gathered vectors stay in the CPU's cache (a
            # whole block's at once took longer than one product per user).
            for group in np.array_split(same_shape, -(-len(same_shape) // _STACKED_USERS)):
                n, e = int(listed[group[0]]), int(entries[group[0]])
                rows = self.liked[bounds[group][:, None] + np.arange(e)]  # (users, e): their entries' rows
                entry_vectors = self.history[rows if self.entry_rows is None else self.entry_rows[rows]]
                products = vectors[starts[group][:, None] + np.arange(n)] @ entry_vectors.transpose(0, 2, 1)
                best = products.argmax(axis=2)
                close = np.take_along_axis(products, best[:, :, None], axis=2)[:, :, 0] >= self.min_similarity
                found = np.take_along_axis(rows, best, axis=1) - self.offsets[group][:, None]
                for u, user_found, user_close in zip(group.tolist(), found.tolist(), close.tolist()):
                    out[u] = [entry if ok else None for entry, ok in zip(user_found, user_close)]
        return out

    def _entry_line(self, u: int, entry: int) -> str | None:
        """The line naming user ``u``'s history entry ``entry`` (None: its kind has no template)."""
        label, kind = _short(self.labels[u][entry]), self.kinds[u][entry]
        lang = "zh" if self.chinese[u] and has_cjk(label) else "en"
        item = self.items[u][entry]
        rating = self.ratings[u].get(item) if item is not None else None
        if kind in (C.EVENT_RATE, C.EVENT_REVIEW) and rating is not None:
            return RATED[lang].format(label=label, number=f"{rating:g}", stars="1 star" if rating == 1 else f"{rating:g} stars")
        template = (ZH_TEMPLATES if lang == "zh" else REASON_TEMPLATES).get(kind)
        return template.format(label=label) if template else None

    def _topic_lines(self, u: int) -> list[tuple[bool, str, str]]:
        """User ``u``'s topics, heaviest first, as (Chinese, what an item must name, the line naming the topic)."""
        out = []
        for topic in self.topics[u] or ():
            # A topic is its head word ("strings" of "guitar strings"); a Chinese one is matched whole.
            chinese, key = _topic_key(topic)
            out.append((chinese, topic if chinese else key, TOPIC["zh" if chinese else "en"].format(label=_short(topic))))
        return out


def _topic_line(topic_lines: list[tuple[bool, str, str]], item_text: str, chinese_user: bool) -> str:
    """The line of an item no entry explains: the first of the user's topics it names, else the generic line."""
    item_words = _word_set(item_text) if topic_lines else frozenset()
    for chinese, key, line in topic_lines:
        if (key in item_text) if chinese else (key in item_words):
            return line
    return chinese_user and ZH_FALLBACK or FALLBACK_REASON


# Users per stacked product of ``ReasonWriter._closest``: 16 users' entries (20 of 384 floats
# each) are 480 KiB, which stay in a core's cache.
_STACKED_USERS = 16
# Item texts and topic labels recur across a worker's users and blocks: each is tokenised once.
@lru_cache(maxsize=1 << 16)
def _word_set(item_text: str) -> frozenset[str]:
    return frozenset(words(item_text))


@lru_cache(maxsize=1 << 14)
def _topic_key(topic: str) -> tuple[bool, str]:
    """(whether the topic is Chinese, its head word)."""
    return has_cjk(topic), head(topic)
