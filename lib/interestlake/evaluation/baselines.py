"""Baselines scored by the evaluation harness: popularity, item-kNN and Spark MLlib ALS.

Each baseline is fitted on the training interactions and scores users from a
history matrix (users x catalog items, binary). Scoring from the history given,
rather than from what the model remembers of the user, lets the cold-start
evaluation hand in truncated histories while the item side stays as trained.
Items in the history given are never recommended.

- popularity: items by their number of training interactions.
- item-kNN: cosine similarity of items' binary user columns (co-occurrence over
  the square roots of the two items' counts), all neighbours; a user's score
  for an item sums its similarities to the user's history items.
- ALS: ``pyspark.ml.recommendation.ALS`` with ``implicitPrefs=True`` (each
  interaction a rating of 1, confidence 1 + alpha). A user's vector is the
  user step of ALS for the history given (Spark's normal equations: YᵀY + alpha
  Σ y yᵀ + regParam·n·I, right side (1 + alpha) Σ y), which for the full
  training history is the vector Spark trained; a test checks that.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from interestlake import constants as C

log = logging.getLogger("interestlake")
_CHUNK = 1024


@dataclass(frozen=True)
class Catalog:
    """Index spaces of one training set: its users and its items (sorted ids)."""

    users: pd.Index
    items: pd.Index

    @classmethod
    def of(cls, train: pd.DataFrame) -> Catalog:
        return cls(
            pd.Index(np.sort(train[C.COL_USER_ID].unique()).astype(object)),
            pd.Index(np.sort(train[C.COL_ITEM_ID].unique()).astype(object)),
        )

    def matrix(
        self, interactions: pd.DataFrame, users: Sequence[str] | None = None, ordered: bool = False
    ) -> sp.csr_matrix:
        """(users x items) matrix; rows follow ``users`` (default: all), unknown items dropped.

        Args:
            interactions: user_id, item_id (and ts when ``ordered``).
            users: Row order; default all users of the catalog.
            ordered: False: every entry is 1. True: an entry is the interaction's 1-based
                position in the user's history by time (ties in input order; a repeated item
                keeps its last position), which sequential models read; ``> 0`` is still
                the binary matrix.
        """
        row_ids = self.users if users is None else pd.Index(list(users), dtype=object)
        known = interactions[
            interactions[C.COL_ITEM_ID].isin(self.items) & interactions[C.COL_USER_ID].isin(row_ids)
        ]
        if ordered:
            known = known.assign(_pos=np.arange(len(known))).sort_values([C.COL_USER_ID, C.COL_TS, "_pos"], kind="stable")
            values = known.groupby(C.COL_USER_ID, sort=False).cumcount().to_numpy(dtype=np.float64) + 1.0
        else:
            values = np.ones(len(known), dtype=np.float64)
        rows = row_ids.get_indexer(known[C.COL_USER_ID])
        cols = self.items.get_indexer(known[C.COL_ITEM_ID])
        # COO -> CSR sums duplicates; build through a frame that keeps one value per cell instead.
        cells = pd.DataFrame({"r": rows, "c": cols, "v": values}).groupby(["r", "c"], sort=False)["v"].max()
        return sp.csr_matrix(
            (cells.to_numpy(), (cells.index.get_level_values(0), cells.index.get_level_values(1))),
            shape=(len(row_ids), len(self.items)),
        )


def top_k(scores: np.ndarray, exclude: sp.csr_matrix, k: int) -> np.ndarray:
    """Best ``k`` item indices per row, excluded items never chosen; ties go to the lower index.

    Returns:
        (rows x k) int matrix; -1 where fewer than ``k`` items are eligible.
    """
    scores = np.array(scores, dtype=np.float64, copy=True)
    rows, cols = exclude.nonzero()
    scores[rows, cols] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    picked = np.take_along_axis(scores, order, axis=1)
    return np.where(np.isfinite(picked), order, -1)


def recommend(model: Baseline, catalog: Catalog, history: sp.csr_matrix, users: Sequence[str], k: int) -> pd.DataFrame:
    """Top ``k`` per user as (user_id, item_id, rank), scored from ``history`` in chunks."""
    frames = []
    users = np.asarray(list(users), dtype=object)
    for start in range(0, len(users), _CHUNK):
        block = history[start : start + _CHUNK]
        picked = top_k(model.score(block, users[start : start + _CHUNK]), block, k)
        rows, ranks = np.nonzero(picked >= 0)
        frames.append(pd.DataFrame({
            C.COL_USER_ID: users[start + rows],
            C.COL_ITEM_ID: catalog.items.to_numpy()[picked[rows, ranks]],
            C.COL_RANK: ranks + 1,
        }))
    if not frames:
        return pd.DataFrame(columns=[C.COL_USER_ID, C.COL_ITEM_ID, C.COL_RANK])
    return pd.concat(frames, ignore_index=True)


class Baseline:
    """A model fitted on a training matrix that scores users from their history."""

    name = "baseline"

    def fit(self, train: sp.csr_matrix) -> Baseline:
        raise NotImplementedError

    def score(self, history: sp.csr_matrix, users: Sequence[str] | None = None) -> np.ndarray:
        """Scores of every catalog item (columns) for each history row.

        ``users`` names the rows; only models that keep trained user vectors and
        cannot fold a history in (``implicit``'s BPR) need it.
        """
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        return {}


class Popularity(Baseline):
    """Most interacted-with training items first."""

    name = "popularity"

    def fit(self, train: sp.csr_matrix) -> Popularity:
        self.counts = np.asarray(train.sum(axis=0), dtype=np.float64).ravel()
        return self

    def score(self, history: sp.csr_matrix, users: Sequence[str] | None = None) -> np.ndarray:
        return np.broadcast_to(self.counts, (history.shape[0], len(self.counts)))


class ItemKNN(Baseline):
    """Item-item cosine similarity of binary co-occurrence, summed over the user's history."""

    name = "item_knn"

    def fit(self, train: sp.csr_matrix) -> ItemKNN:
        self.train = train.tocsr()
        counts = np.asarray(train.sum(axis=0), dtype=np.float64).ravel()
        self.inv_sqrt = np.where(counts > 0, 1.0 / np.sqrt(np.maximum(counts, 1)), 0.0)
        return self

    def score(self, history: sp.csr_matrix, users: Sequence[str] | None = None) -> np.ndarray:
        # Σ_i h_i C_ij / sqrt(n_i n_j) with C = XᵀX, computed as ((h D^-½) Xᵀ) X D^-½
        # so the items x items matrix is never built.
        weighted = history.multiply(self.inv_sqrt[None, :]).tocsr()
        through_users = weighted @ self.train.T
        return np.asarray((through_users @ self.train).todense()) * self.inv_sqrt[None, :]


@dataclass
class ALSBaseline(Baseline):
    """Spark MLlib implicit ALS; users are folded in from the history given."""

    spark: Any
    rank: int = 64
    reg_param: float = 0.1
    alpha: float = 10.0
    max_iter: int = 10
    seed: int = 42
    name: str = field(default="als", init=False)

    def params(self) -> dict[str, Any]:
        return {"rank": self.rank, "reg_param": self.reg_param, "alpha": self.alpha, "max_iter": self.max_iter}

    def fit(self, train: sp.csr_matrix) -> ALSBaseline:
        from pyspark.ml.recommendation import ALS

        coo = train.tocoo()
        ratings = self.spark.createDataFrame(
            pd.DataFrame({"user": coo.row.astype(np.int32), "item": coo.col.astype(np.int32),
                          "rating": np.ones(coo.nnz, dtype=np.float32)})
        )
        als = ALS(
            rank=self.rank, regParam=self.reg_param, alpha=self.alpha, maxIter=self.max_iter, seed=self.seed,
            implicitPrefs=True, userCol="user", itemCol="item", ratingCol="rating", coldStartStrategy="drop",
            nonnegative=False,
        )
        model = als.fit(ratings)
        self.item_factors = _factors(model.itemFactors, train.shape[1], self.rank)
        self.user_factors = _factors(model.userFactors, train.shape[0], self.rank)
        self.gram = self.item_factors.T @ self.item_factors
        return self

    def user_vectors(self, history: sp.csr_matrix) -> np.ndarray:
        """ALS's user step for each history row (the normal equations Spark solves)."""
        history = history.tocsr()
        out = np.zeros((history.shape[0], self.rank))
        eye = np.eye(self.rank)
        for row in range(history.shape[0]):
            items = history.indices[history.indptr[row] : history.indptr[row + 1]]
            if len(items) == 0:
                continue
            y = self.item_factors[items]
            lhs = self.gram + self.alpha * (y.T @ y) + self.reg_param * len(items) * eye
            out[row] = np.linalg.solve(lhs, (1.0 + self.alpha) * y.sum(axis=0))
        return out

    def score(self, history: sp.csr_matrix, users: Sequence[str] | None = None) -> np.ndarray:
        return self.user_vectors(history) @ self.item_factors.T


def _factors(frame, n: int, rank: int) -> np.ndarray:
    """Dense factor matrix from ALS's (id, features) DataFrame; ids missing from it get zeros."""
    rows = frame.toPandas()
    out = np.zeros((n, rank))
    if len(rows):
        out[rows["id"].to_numpy()] = np.stack(rows["features"].to_numpy())
    return out


@dataclass(frozen=True)
class ALSGrid:
    """The grid searched for ALS on a validation split (conf ``evaluation.als``)."""

    ranks: tuple[int, ...] = (32, 64)
    reg_params: tuple[float, ...] = (0.01, 0.1)
    alphas: tuple[float, ...] = (1.0, 10.0)
    max_iter: int = 10

    def points(self) -> list[dict[str, Any]]:
        return [
            {"rank": r, "reg_param": g, "alpha": a, "max_iter": self.max_iter}
            for r, g, a in itertools.product(self.ranks, self.reg_params, self.alphas)
        ]


def search_als(
    spark, train: pd.DataFrame, validation: pd.DataFrame, grid: ALSGrid, k: int, seed: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Fits ALS for every grid point on ``train`` and picks the best NDCG@k on ``validation``.

    Returns:
        (best parameters, one row per grid point with its validation NDCG@k and Recall@k).
    """
    return search(lambda point, _: ALSBaseline(spark, seed=seed, **point), grid.points(), train, validation, k, "ALS")


def search(
    build: Callable[[dict[str, Any], Catalog], Baseline],
    points: list[dict[str, Any]],
    train: pd.DataFrame,
    validation: pd.DataFrame,
    k: int,
    label: str,
    ordered: bool = False,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Fits ``build(point)`` for every grid point on ``train`` and picks the best NDCG@k on ``validation``.

    Args:
        build: A model for one grid point and the training part's catalog (not fitted yet).
        points: The grid, one dict of parameters per point.
        train: Interactions the models are fitted on (the training part of a validation split).
        validation: Held-out interactions they are scored against.
        k: Cut-off of the metrics.
        label: Name in the log lines.
        ordered: Fit and score on ``Catalog.matrix(..., ordered=True)`` (sequential models).

    Returns:
        (best parameters, one row per grid point with its validation NDCG@k and Recall@k).
    """
    from interestlake.evaluation import metrics

    catalog = Catalog.of(train)
    matrix = catalog.matrix(train, ordered=ordered)
    users = np.sort(validation[C.COL_USER_ID].unique())
    history = catalog.matrix(train, users, ordered=ordered)
    results = []
    for point in points:
        model = build(point, catalog).fit(matrix)
        recs = recommend(model, catalog, history, users, k)
        scores = metrics.summary(metrics.ranking_hits(recs, validation, k, users), k, len(catalog.items))
        results.append({**point, "ndcg": scores["ndcg"], "recall": scores["recall"]})
        log.info("evaluate: %s %s validation NDCG@%d %.4f", label, point, k, scores["ndcg"])
    best = max(results, key=lambda row: (row["ndcg"], row["recall"]))
    return {name: best[name] for name in points[0]}, results
