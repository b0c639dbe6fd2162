"""Top-K ranking metrics (numpy and pandas only).

All metrics start from the same ``hits`` matrix: one row per evaluated user,
one column per rank (1..max_k), True where the recommended item is one of the
user's test items. A user with no recommendations has an all-False row and
counts as a miss. For one user with relevant set R and list L:

- Recall@K = |L[:K] ∩ R| / |R|
- NDCG@K = DCG / IDCG, DCG = Σ_{r<=K, L[r] in R} 1/log2(r+1), IDCG the same for a
  list with all of R first (min(|R|, K) hits)
- MRR@K = 1 / rank of the first relevant item within the top K (0 if none)
- HitRate@K = 1 if any of the top K is relevant
- catalog coverage@K = distinct items in all users' top K / catalog size

Each is averaged over the evaluated users.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from interestlake import constants as C

METRICS = ("recall", "ndcg", "mrr", "hit_rate")


@dataclass(frozen=True)
class RankingHits:
    """Which recommended ranks hit a test item, per evaluated user.

    Attributes:
        users: Evaluated user ids, in row order.
        hits: Boolean matrix (users x max_k).
        relevant: Number of test items per user.
        lists: Recommended item ids per user (object matrix, None past a short list).
    """

    users: np.ndarray
    hits: np.ndarray
    relevant: np.ndarray
    lists: np.ndarray

    @property
    def max_k(self) -> int:
        return self.hits.shape[1]


def ranking_hits(
    recommendations: pd.DataFrame,
    test: pd.DataFrame,
    max_k: int,
    users: Iterable[str] | None = None,
    user_col: str = C.COL_USER_ID,
    item_col: str = C.COL_ITEM_ID,
    rank_col: str = C.COL_RANK,
) -> RankingHits:
    """Builds the hits matrix of recommendation lists against test interactions.

    Args:
        recommendations: user, item, rank (1 = best); ranks past ``max_k`` are ignored.
        test: user, item rows: the relevant items.
        max_k: Largest K any metric will be computed for.
        users: Users to evaluate (default: every user in ``test``).

    Raises:
        ValueError: Missing columns, ``max_k < 1``, or a user with two items at one rank.
    """
    if max_k < 1:
        raise ValueError(f"max_k must be >= 1, got {max_k}")
    for frame, columns, what in ((recommendations, [user_col, item_col, rank_col], "recommendations"),
                                 (test, [user_col, item_col], "test")):
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise ValueError(f"{what} lack column(s) {missing}")
    user_ids = np.asarray(sorted(set(test[user_col])) if users is None else list(users), dtype=object)
    row_of = pd.Series(np.arange(len(user_ids)), index=pd.Index(user_ids))
    recs = recommendations[(recommendations[rank_col] >= 1) & (recommendations[rank_col] <= max_k)]
    recs = recs[recs[user_col].isin(row_of.index)]
    if recs.duplicated([user_col, rank_col]).any():
        raise ValueError("recommendations hold two items at the same (user, rank)")
    rows = row_of[recs[user_col]].to_numpy()
    cols = recs[rank_col].to_numpy(dtype=np.int64) - 1
    lists = np.full((len(user_ids), max_k), None, dtype=object)
    lists[rows, cols] = recs[item_col].to_numpy(dtype=object)
    relevant_pairs = test[test[user_col].isin(row_of.index)][[user_col, item_col]].drop_duplicates()
    relevant = np.bincount(row_of[relevant_pairs[user_col]].to_numpy(), minlength=len(user_ids))
    hit_pairs = recs.merge(relevant_pairs, on=[user_col, item_col], how="inner")
    hits = np.zeros((len(user_ids), max_k), dtype=bool)
    hits[row_of[hit_pairs[user_col]].to_numpy(), hit_pairs[rank_col].to_numpy(dtype=np.int64) - 1] = True
    return RankingHits(user_ids, hits, relevant, lists)


def per_user_metrics(result: RankingHits, k: int) -> pd.DataFrame:
    """Recall, NDCG, MRR and hit rate at ``k`` for every evaluated user (index: user id)."""
    if not 1 <= k <= result.max_k:
        raise ValueError(f"k must be in 1..{result.max_k}, got {k}")
    hits = result.hits[:, :k]
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    n_hits = hits.sum(axis=1)
    relevant = result.relevant
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(relevant > 0, n_hits / np.maximum(relevant, 1), 0.0)
        ideal = np.cumsum(discounts)[np.clip(np.minimum(relevant, k) - 1, 0, None)]
        ndcg = np.where(relevant > 0, (hits * discounts).sum(axis=1) / ideal, 0.0)
    first = np.where(hits.any(axis=1), hits.argmax(axis=1) + 1, 0)
    mrr = np.where(first > 0, 1.0 / np.maximum(first, 1), 0.0)
    return pd.DataFrame(
        {"recall": recall, "ndcg": ndcg, "mrr": mrr, "hit_rate": (n_hits > 0).astype(float)},
        index=pd.Index(result.users, name=C.COL_USER_ID),
    )


def coverage(result: RankingHits, k: int, catalog_size: int) -> float:
    """Share of the catalog that appears in at least one user's top ``k``."""
    if catalog_size <= 0:
        raise ValueError(f"catalog_size must be > 0, got {catalog_size}")
    shown = {item for item in result.lists[:, :k].ravel() if item is not None}
    return len(shown) / catalog_size


def summary(result: RankingHits, k: int, catalog_size: int) -> dict[str, float]:
    """Mean Recall/NDCG/MRR/HitRate at ``k`` over users, and catalog coverage at ``k``."""
    means = per_user_metrics(result, k).mean(axis=0)
    out = {name: float(means[name]) if len(result.users) else 0.0 for name in METRICS}
    out["coverage"] = coverage(result, k, catalog_size)
    return out


def curves(result: RankingHits, ks: Iterable[int]) -> pd.DataFrame:
    """Mean metrics for each K (rows: k; columns: recall, ndcg, mrr, hit_rate)."""
    rows = [{"k": k, **per_user_metrics(result, k).mean(axis=0).to_dict()} for k in ks]
    return pd.DataFrame(rows).set_index("k")
