"""The re-ranker of the recommend stage and the queries it ranks for (numpy only).

Retrieval (``interestlake.pipeline.scorer``) scans the item matrix once per user block and
keeps, for each of a user's queries, the best ``pool_factor x K`` items: each interest by the
user's relevance function (cosine to the interest vector without a learned model; the model's
score ``[u, 1] . [v_j, b_j]`` plus its item-kNN term under one), each fresh need by cosine to
the query's vector with its price bounds and negations applied in the scan. The union of those
pools is what ``assemble`` orders, whatever the relevance function was, slot by slot:

1. fresh needs first: ``round(K * needs.share * freshness)`` slots, filled with the
   candidates that meet the need's hard constraints (price bounds, exclusions) and name
   one of its words or are close to it (cosine >= ``NEED_MIN_COSINE``), by
   cos(need, item) + ``term_weight`` * (share of the need's words the item names)
   (+ a small bonus for low prices when the need asks for cheap)
   (+ under a model, ``needs.model_weight`` * the model's score for this user scaled to
   [0, 1] over the candidates: the need brings the user's kind of item within its bounds);
2. the remaining slots go to the interests in proportion to their share (smooth
   weighted round robin: the heaviest interest leads, every kept interest gets its turn),
   each by its relevance; what a fresh need excludes ("not Larkwood") is left out of these
   slots too, and fills one only when no other candidate is left (the list keeps K items);
3. every relevance loses ``negative.demote`` * the candidate's cosine to the closest
   disliked item, and with ``mmr_weight`` > 0 each pick is the maximal-marginal-relevance
   one instead of the most relevant. Both are cosines, so a relevance in other units (the
   model's score) is divided by its *unit* first: its spread (max - min) over the user's
   candidates, 1 for a cosine.

With one interest, no need, no dislike and ``mmr_weight`` 0 the list is exactly the
top K of the relevance (ties by item id).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from interestlake import constants as C
from interestlake.models.diversity import mmr_pick
from interestlake.models.interest import normalize
from interestlake.models.multi_interest import cluster_interests
from interestlake.models.needs import Need, parse_need
from interestlake.settings import SteerSettings

# Largest bonus a cheap-wanting need gives the cheapest allowed candidate.
_CHEAP_BONUS = 0.2
# A need's slot goes only to an item naming one of its words or this close to the query:
# a cheap item of another kind must not fill it just because it meets the price bound.
NEED_MIN_COSINE = 0.3
# A need whose freshness fell below this gets no slot.
_MIN_FRESHNESS = 0.05
_SECONDS_PER_HOUR = 3600.0
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
    if len(needs) == 1:  # the usual case: what the split below gives one need, without arrays
        return [int(round(k * share * max(0.0, needs[0].freshness)))]
    fresh = np.array([max(0.0, n.freshness) for n in needs])
    total = int(round(k * share * fresh.max()))
    if total == 0 or fresh.sum() == 0:
        return [0] * len(needs)
    exact = total * fresh / fresh.sum()
    slots = np.floor(exact).astype(int)
    for index in np.argsort(-(exact - slots), kind="stable")[: total - slots.sum()]:
        slots[index] += 1
    return slots.tolist()


@dataclass(frozen=True)
class InterestRelevance:
    """One interest's relevance of each candidate, its share of the slots and its unit (see the module docstring)."""

    relevance: np.ndarray
    share: float = 1.0
    unit: float = 1.0


def assemble(
    item_ids: Sequence[str],
    vectors: np.ndarray,
    prices: np.ndarray,
    texts: Sequence[str],
    interests: Sequence[InterestRelevance],
    needs: Sequence[NeedQuery],
    disliked: np.ndarray,
    k: int,
    conf: SteerSettings,
    model_fit: np.ndarray | None = None,
) -> list[Pick]:
    """The user's top K, best first.

    Args:
        item_ids: Candidate ids, sorted (ties go to the first).
        vectors: Their unit encoder vectors, shape (c, d).
        prices: Their prices (nan: unknown), shape (c,).
        texts: Their lower-cased ``title. category. description``.
        interests: Each interest's relevance of the candidates; shares sum to 1.
        needs: The user's fresh needs, freshest first.
        disliked: Unit vectors of the items the user disliked, shape (m, d).
        k: List length.
        conf: ``steer`` settings.
        model_fit: Under a learned model, its score of each candidate for this user scaled
            to [0, 1]; None without a model.

    Returns:
        At most k picks; scores are relevances in their own units, made non-increasing along the list.
    """
    if len(item_ids) == 0 or k <= 0:
        return []
    vectors = np.asarray(vectors, dtype=np.float64)
    demotion = np.zeros(len(item_ids))
    if len(disliked) and conf.negative.demote > 0:
        demotion = conf.negative.demote * np.clip((vectors @ np.asarray(disliked, dtype=np.float64).T).max(axis=1), 0, None)
    # Relevances in cosine units (see the module docstring); picks report them in their own.
    scaled = [np.asarray(i.relevance, dtype=np.float64) / i.unit - demotion for i in interests]
    units = [i.unit for i in interests]
    if not needs and len(interests) == 1 and conf.mmr_weight == 0:
        # The usual list: the most relevant first (what the slot loop below gives, in one sort).
        order = np.argsort(-scaled[0], kind="stable")[:k]
        return [Pick(item_ids[i], float(scaled[0][i] * units[0]), vectors[i]) for i in order]
    free = np.ones(len(item_ids), dtype=bool)
    picks: list[Pick] = []

    orders: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def take(relevance: np.ndarray, allowed: np.ndarray, need: int | None, unit: float, count: int = 1) -> int:
        """Up to ``count`` picks, one after another, each the best allowed item left; how many were made."""
        taken = 0
        while taken < count:
            if conf.mmr_weight == 0:
                # Each pick is then the most relevant allowed item left (ties to the lower
                # index), so the next picks are the first allowed free items in relevance order.
                batch = _most_relevant(relevance, allowed & free, orders, count - taken)
            else:
                chosen = np.array([p.vector for p in picks]) if picks else np.zeros((0, vectors.shape[1]))
                index = mmr_pick(relevance, vectors, chosen, conf.mmr_weight, allowed & free)
                batch = [index] if index >= 0 else []
            if not batch:
                break
            for index in batch:
                free[index] = False
                picks.append(Pick(item_ids[index], float(relevance[index] * unit), vectors[index], need))
            taken += len(batch)
        return taken

    for j, (query, slots) in enumerate(zip(needs, need_slots(k, conf.needs.share, needs))):
        allowed = query.need.allows_each(prices, texts)
        # Words are matched only where the bounds allow the item: elsewhere its relevance is never read.
        match = np.zeros(len(texts))
        candidates = np.flatnonzero(allowed)
        match[candidates] = query.need.term_matches([texts[i] for i in candidates.tolist()])
        cosine = vectors @ np.asarray(query.vector, dtype=np.float64)
        allowed &= (match > 0) | (cosine >= NEED_MIN_COSINE)
        relevance = cosine + conf.needs.term_weight * match - demotion
        if model_fit is not None:
            relevance += conf.needs.model_weight * model_fit
        if query.need.cheap:
            relevance += _cheap_bonus(prices, allowed)
        take(relevance, allowed, j, 1.0, min(slots, k - len(picks)))

    # What a fresh need rules out ("not Larkwood") stays out of the interests' slots too; an item
    # it rules out fills a slot only when nothing else is left, so that the list keeps K items.
    ruling = [query.need for query in needs if query.need.excluded]
    ruled_out = np.array([any(need.excludes(text) for need in ruling) for text in texts], dtype=bool) if ruling else None
    everything = np.ones(len(item_ids), dtype=bool)
    shares = np.array([i.share for i in interests], dtype=np.float64)
    for allowed in ((~ruled_out, everything) if ruled_out is not None and ruled_out.any() else (everything,)):
        current = np.zeros(len(interests))
        exhausted = np.zeros(len(interests), dtype=bool)
        if len(interests) == 1:  # the usual case: the round robin below reduces to this
            take(scaled[0], allowed, None, units[0], k - len(picks))
        while len(picks) < k and not exhausted.all() and len(interests) > 1:
            # Smooth weighted round robin: shares decide how often each interest picks.
            current += np.where(exhausted, 0.0, shares)
            turn = int(np.argmax(np.where(exhausted, -np.inf, current)))
            current[turn] -= shares[~exhausted].sum()
            if not take(scaled[turn], allowed, None, units[turn]):
                exhausted[turn] = True
    for position in range(1, len(picks)):
        if picks[position].score > picks[position - 1].score:
            picks[position] = Pick(picks[position].item_id, picks[position - 1].score, picks[position].vector,
                                   picks[position].need)
    return picks


@dataclass(frozen=True)
class InterestQuery:
    """One interest of a user as a retrieval query.

    Attributes:
        vector: What candidates are scored with: a unit encoder-space vector without a
            learned model, the model's ``[u, 1]`` under one.
        share: Its share of the slots the needs leave.
        recent_items: Under a model, the recent items (newest first) whose item-kNN term it adds.
    """

    vector: np.ndarray
    share: float
    recent_items: tuple[str | None, ...] = ()


class UserQueries:
    """One user's queries (interests, fresh needs) and evidence, from the scorer's user row.

    Args:
        row: The user's side as the recommend stage gathers it: ``interest``, ``excluded``,
            the recent history (``hist_kind``, ``hist_item``, ``hist_label``, newest first; where
            ``multi_interest`` clusters it, the only reader of these two, ``hist_vec`` as an (m, d)
            array and, under a model, ``hist_ts``) and, when steering is on, the
            evidence (``ref_ts``, ``need_*``, ``disliked_*``, ``rated_*``, ``topics``).
        conf: ``steer`` settings (``enabled: false``: one interest, nothing steers).
        weights: Event-type weights of the interests stage (for clustering the history).
        model: The learned ``InterestModel`` in use, or None.
    """

    def __init__(self, row: Mapping, conf: SteerSettings, weights: Mapping[str, float], model=None):
        self.user_id = row[C.COL_USER_ID]
        self.model = model
        self.conf = conf
        interest = np.asarray(row["interest"], dtype=np.float32)
        self.excluded = set(row.get("excluded") or ()) | set(row.get("disliked_items") or ())
        self.kinds = row.get("hist_kind") or []
        self.labels = row.get("hist_label") or []
        self.items = row.get("hist_item") or []
        history = row.get("hist_vec")
        self.history = history if history is not None and len(history) else np.zeros((0, 0), np.float32)
        disliked = row.get("disliked_vec")
        self.disliked = disliked if conf.enabled and conf.negative.enabled and disliked is not None and len(disliked) \
            else np.zeros((0, self.history.shape[1] if len(self.history) else 0), np.float32)
        self.ratings = dict(zip(row.get("rated_items") or [], row.get("rated_values") or []))
        self.topics = row.get("topics") or []
        recent = tuple(self.items) if model is not None else ()
        self.interests = [InterestQuery(interest, 1.0, recent)]
        if conf.enabled and conf.multi_interest.enabled:
            self.interests = self._clusters(interest, row.get("hist_ts") or [], weights) or self.interests
        self.needs: list[NeedQuery] = []
        if conf.enabled and conf.needs.enabled:
            ref = row.get("ref_ts")
            vectors = row.get("need_vec")
            for text, ts, vector in zip(row.get("need_text") or [], row.get("need_ts") or [], [] if vectors is None else vectors):
                age_hours = max(0.0, (ref - ts).total_seconds() / _SECONDS_PER_HOUR) if ref is not None else 0.0
                freshness = 2.0 ** (-age_hours / conf.needs.half_life_hours)
                if freshness >= _MIN_FRESHNESS:
                    self.needs.append(NeedQuery(parse_need(text), np.asarray(vector, dtype=np.float32), freshness))

    def _clusters(self, interest: np.ndarray, times: Sequence, weights: Mapping[str, float]) -> list[InterestQuery]:
        """One query per interest cluster of the recent history, or [] when it does not split.

        Without a model a cluster's query is ``normalize((1 - w) * interest + w * centre)``;
        under one it is the model's own user vector of the cluster's entries, with the kNN
        term of the cluster's items, so every query stays in the model's space.
        """
        conf = self.conf.multi_interest
        liked = [i for i, kind in enumerate(self.kinds) if kind != C.EVENT_DISLIKE]
        if len(liked) < 2 or not len(self.history):
            return []
        # Liked entries weigh their event type's weight, disliked ones the negative weight.
        entry_weights = np.array([weights.get(kind) or 1.0 if kind != C.EVENT_DISLIKE else self.conf.negative.weight
                                  for kind in self.kinds])
        found = cluster_interests(self.history, entry_weights, conf.min_similarity, conf.max_interests, conf.min_share)
        if not (len(found) > 1 or (found and len(found[0].members) < len(liked))):
            return []
        if self.model is None:
            blend = conf.cluster_weight
            return [InterestQuery(normalize((1 - blend) * interest + blend * c.centre).astype(np.float32), c.share)
                    for c in found]
        seconds = np.array([ts.timestamp() if ts is not None else 0.0 for ts in times], dtype=np.float64)
        queries = []
        for cluster in found:
            members = [liked[m] for m in cluster.members]  # newest first, as the history
            vector = self.model.user_vector(self.history[members], [self.kinds[m] for m in members],
                                            seconds[members] if len(seconds) else np.zeros(len(members)),
                                            [self.items[m] for m in members])
            queries.append(InterestQuery(vector, cluster.share, tuple(self.items[m] for m in members)))
        return queries

    @cached_property  # read several times per user per block; what it reads is set once, in __init__
    def plain(self) -> bool:
        """True when the list is the top K of the one interest's relevance (nothing re-ranks it)."""
        return not self.needs and len(self.interests) == 1 and not len(self.disliked) and (
            not self.conf.enabled or self.conf.mmr_weight == 0)

    def relevances(
        self, vectors: np.ndarray, score_vectors: np.ndarray | None, knn_terms: Sequence[np.ndarray] | None = None
    ) -> tuple[list[InterestRelevance], np.ndarray | None]:
        """Each interest's relevance of the candidates, and under a model its fit for the needs.

        Args:
            vectors: The candidates' encoder vectors (c, d).
            score_vectors: Their ``[v_j, b_j]`` under a model (c, h + 1), else None.
            knn_terms: Under a model, each interest's item-kNN term of the candidates
                (``InterestModel.knn_seeds`` of its ``recent_items`` times the neighbour matrix), else None.

        Returns:
            (one ``InterestRelevance`` per interest, the first interest's model score scaled
            to [0, 1] over the candidates or None without a model).
        """
        if self.model is None:
            out = [InterestRelevance(vectors.astype(np.float64) @ q.vector.astype(np.float64), q.share) for q in self.interests]
            return out, None
        out = []
        for query, terms in zip(self.interests, knn_terms):
            # float32 as retrieval scores, so a pool's order and the re-ranker's agree.
            relevance = ((score_vectors @ query.vector) + terms).astype(np.float64)
            spread = float(relevance.max() - relevance.min()) if len(relevance) else 0.0
            out.append(InterestRelevance(relevance, query.share, spread if spread > 0 else 1.0))
        first = out[0]
        return out, (first.relevance - first.relevance.min()) / first.unit

    def rank(self, item_ids: Sequence[str], vectors: np.ndarray, score_vectors: np.ndarray | None, prices: np.ndarray,
             texts: Sequence[str], k: int, knn_terms: Sequence[np.ndarray] | None = None) -> list[Pick]:
        """The user's top K from their pooled candidates (sorted by id); ``knn_terms`` as ``relevances``."""
        interests, fit = self.relevances(vectors, score_vectors, knn_terms)
        return assemble(item_ids, vectors, prices, texts if self.needs else [], interests, self.needs, self.disliked,
                        k, self.conf, fit)


def _most_relevant(relevance: np.ndarray, allowed: np.ndarray, orders: dict[int, tuple[np.ndarray, np.ndarray]],
                   count: int = 1) -> list[int]:
    """The ``count`` most relevant allowed candidates, best first, ties to the lower index (fewer when fewer are allowed).

    What ``count`` picks of ``mmr_pick`` with weight 0 take, each ruling its pick out of the
    next: each relevance array is sorted once per list, so a user's K picks cost one sort
    instead of K full scans. ``orders`` keeps each sorted array alive with its order: a freed
    array's ``id`` may be reused by the next one, which must not find a stale order.
    """
    kept = orders.get(id(relevance))
    if kept is None or kept[0] is not relevance:
        kept = orders[id(relevance)] = (relevance, np.argsort(-relevance, kind="stable"))
    order = kept[1]
    return order[allowed[order]][:count].tolist()


def _cheap_bonus(prices: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Up to ``_CHEAP_BONUS`` for the cheapest allowed candidates, linear in price rank; 0 without a price."""
    bonus = np.zeros(len(prices))
    known = allowed & ~np.isnan(prices)
    if known.sum() < 2:
        return bonus
    order = np.argsort(np.argsort(np.where(known, prices, np.inf), kind="stable"), kind="stable")
    bonus[known] = _CHEAP_BONUS * (1 - order[known] / (known.sum() - 1))
    return bonus
