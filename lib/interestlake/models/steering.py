"""One user's steered top K from pooled candidates (numpy only).

The candidates are what each of the user's query vectors retrieved (their interests
and fresh needs). The list is built slot by slot:

1. fresh needs first: ``round(K * needs.share * freshness)`` slots, filled with the
   candidates that meet the need's hard constraints (price bounds, exclusions) and name
   one of its words or are close to it (cosine >= ``NEED_MIN_COSINE``), by
   cos(need, item) + ``term_weight`` * (share of the need's words the item names)
   (+ a small bonus for low prices when the need asks for cheap);
2. the remaining slots go to the interests in proportion to their share (smooth
   weighted round robin: the heaviest interest leads, every kept interest gets its turn),
   each by cos(interest, item);
3. every relevance loses ``negative.demote`` * the candidate's cosine to the closest
   disliked item, and with ``mmr_weight`` > 0 each pick is the maximal-marginal-relevance
   one instead of the most relevant.

With one interest, no need, no dislike and ``mmr_weight`` 0 the list is exactly the
plain cosine top K (ties by item id).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from interestlake.models.diversity import mmr_pick
from interestlake.models.needs import Need
from interestlake.settings import SteerSettings

# Largest bonus a cheap-wanting need gives the cheapest allowed candidate.
_CHEAP_BONUS = 0.2
# A need's slot goes only to an item naming one of its words or this close to the query:
# a cheap item of another kind must not fill it just because it meets the price bound.
NEED_MIN_COSINE = 0.3


@dataclass(frozen=True)
class NeedQuery:
    """A fresh need of the user: the parsed query, its vector and freshness in (0, 1]."""

    need: Need
    vector: np.ndarray
    freshness: float


@dataclass(frozen=True)
class Pick:
    """One listed item: its relevance to what placed it, and the need that did (None: an interest)."""

    item_id: str
    score: float
    vector: np.ndarray
    need: int | None = None


def need_slots(k: int, share: float, needs: Sequence[NeedQuery]) -> list[int]:
    """Slots of each need: ``round(k * share * freshest)`` in all, split by freshness (largest remainder)."""
    if not needs:
        return []
    fresh = np.array([max(0.0, n.freshness) for n in needs])
    total = int(round(k * share * fresh.max()))
    if total == 0 or fresh.sum() == 0:
        return [0] * len(needs)
    exact = total * fresh / fresh.sum()
    slots = np.floor(exact).astype(int)
    for index in np.argsort(-(exact - slots), kind="stable")[: total - slots.sum()]:
        slots[index] += 1
    return slots.tolist()


def assemble(
    item_ids: Sequence[str],
    vectors: np.ndarray,
    prices: np.ndarray,
    texts: Sequence[str],
    interests: Sequence[tuple[np.ndarray, float]],
    needs: Sequence[NeedQuery],
    disliked: np.ndarray,
    k: int,
    conf: SteerSettings,
) -> list[Pick]:
    """The user's top K, best first.

    Args:
        item_ids: Candidate ids, sorted (ties go to the first).
        vectors: Their unit vectors, shape (c, d).
        prices: Their prices (nan: unknown), shape (c,).
        texts: Their lower-cased ``title. category. description``.
        interests: (query vector, share) of each interest; shares sum to 1.
        needs: The user's fresh needs, freshest first.
        disliked: Unit vectors of the items the user disliked, shape (m, d).
        k: List length.
        conf: ``steer`` settings.

    Returns:
        At most k picks; scores are relevances, made non-increasing along the list.
    """
    if len(item_ids) == 0 or k <= 0:
        return []
    vectors = np.asarray(vectors, dtype=np.float64)
    demotion = np.zeros(len(item_ids))
    if len(disliked) and conf.negative.demote > 0:
        demotion = conf.negative.demote * np.clip((vectors @ np.asarray(disliked, dtype=np.float64).T).max(axis=1), 0, None)
    if not needs and len(interests) == 1 and conf.mmr_weight == 0:
        # The usual list: the most relevant first (what the slot loop below gives, in one sort).
        relevance = vectors @ np.asarray(interests[0][0], dtype=np.float64) - demotion
        return [Pick(item_ids[i], float(relevance[i]), vectors[i]) for i in np.argsort(-relevance, kind="stable")[:k]]
    free = np.ones(len(item_ids), dtype=bool)
    picks: list[Pick] = []

    orders: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def take(relevance: np.ndarray, allowed: np.ndarray, need: int | None) -> bool:
        if conf.mmr_weight == 0:
            index = _most_relevant(relevance, allowed & free, orders)
        else:
            chosen = np.array([p.vector for p in picks]) if picks else np.zeros((0, vectors.shape[1]))
            index = mmr_pick(relevance, vectors, chosen, conf.mmr_weight, allowed & free)
        if index < 0:
            return False
        free[index] = False
        picks.append(Pick(item_ids[index], float(relevance[index]), vectors[index], need))
        return True

    for j, (query, slots) in enumerate(zip(needs, need_slots(k, conf.needs.share, needs))):
        match = np.array([query.need.term_match(t) for t in texts])
        cosine = vectors @ np.asarray(query.vector, dtype=np.float64)
        allowed = np.array([query.need.allows(p, t) for p, t in zip(prices.tolist(), texts)], dtype=bool)
        allowed &= (match > 0) | (cosine >= NEED_MIN_COSINE)
        relevance = cosine + conf.needs.term_weight * match - demotion
        if query.need.cheap:
            relevance += _cheap_bonus(prices, allowed)
        for _ in range(min(slots, k - len(picks))):
            if not take(relevance, allowed, j):
                break

    relevances = [vectors @ np.asarray(q, dtype=np.float64) - demotion for q, _ in interests]
    shares = np.array([share for _, share in interests], dtype=np.float64)
    current = np.zeros(len(interests))
    everything = np.ones(len(item_ids), dtype=bool)
    exhausted = np.zeros(len(interests), dtype=bool)
    if len(interests) == 1:  # the usual case: the round robin below reduces to this
        while len(picks) < k and take(relevances[0], everything, None):
            pass
    while len(picks) < k and not exhausted.all() and len(interests) > 1:
        # Smooth weighted round robin: shares decide how often each interest picks.
        current += np.where(exhausted, 0.0, shares)
        turn = int(np.argmax(np.where(exhausted, -np.inf, current)))
        current[turn] -= shares[~exhausted].sum()
        if not take(relevances[turn], everything, None):
            exhausted[turn] = True
    for position in range(1, len(picks)):
        if picks[position].score > picks[position - 1].score:
            picks[position] = Pick(picks[position].item_id, picks[position - 1].score, picks[position].vector,
                                   picks[position].need)
    return picks


def _most_relevant(relevance: np.ndarray, allowed: np.ndarray, orders: dict[int, tuple[np.ndarray, np.ndarray]]) -> int:
    """What ``mmr_pick`` returns with weight 0 (highest allowed relevance, ties to the lower index), or -1.

    Each relevance array is sorted once per list, so the K picks of a user cost one sort
    instead of K full scans. ``orders`` keeps each sorted array alive with its order: a
    freed array's ``id`` may be reused by the next one, which must not find a stale order.
    """
    kept = orders.get(id(relevance))
    if kept is None or kept[0] is not relevance:
        kept = orders[id(relevance)] = (relevance, np.argsort(-relevance, kind="stable"))
    for index in kept[1]:
        if allowed[index]:
            return int(index)
    return -1


def _cheap_bonus(prices: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Up to ``_CHEAP_BONUS`` for the cheapest allowed candidates, linear in price rank; 0 without a price."""
    bonus = np.zeros(len(prices))
    known = allowed & ~np.isnan(prices)
    if known.sum() < 2:
        return bonus
    order = np.argsort(np.argsort(np.where(known, prices, np.inf), kind="stable"), kind="stable")
    bonus[known] = _CHEAP_BONUS * (1 - order[known] / (known.sum() - 1))
    return bonus
