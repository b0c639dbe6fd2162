"""Retrieval arithmetic of the recommend stage: the one exact top-K pool, block products, the kNN bonus.

numpy on the CPU; the block products run on CUDA through torch when asked
(``recommend.device``), and FAISS answers approximate searches for large catalogs.
Both are imported only when used.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SparseBonus:
    """Scores added to some (query row, item) pairs of a block of query rows: the learned model's item-kNN term.

    Kept as arrays, not a dict per row, because a user's kNN term touches hundreds of
    items and each item block would otherwise cost a Python loop over all of them.

    Attributes:
        users: The query row, per pair.
        rows: The item's row in the model's catalog, per pair.
        values: The bonus (float32), per pair; (query row, item row) pairs are unique.
        catalog_size: Rows in the model's catalog.
    """

    users: np.ndarray
    rows: np.ndarray
    values: np.ndarray
    catalog_size: int

    def add_to(self, scores: np.ndarray, block_rows: np.ndarray) -> None:
        """Adds the bonus of a block's items to ``scores`` (query rows x the block's items) in place.

        Args:
            scores: The block's scores.
            block_rows: Each block item's row in the model's catalog (-1: unknown to the model).
        """
        if not len(self.values):
            return
        column = np.full(self.catalog_size, -1, dtype=np.int64)
        known = block_rows >= 0
        column[block_rows[known]] = np.flatnonzero(known)
        columns = column[self.rows]
        here = columns >= 0
        scores[self.users[here], columns[here]] += self.values[here]


class TopKPool:
    """The best ``depth`` items of each query row over a stream of item blocks: the one exact top K.

    Items are ranked by score, ties by their id order (``ranks``), so any split of the
    catalog into blocks, and any block order, gives the same pools. Items scored
    ``-inf`` (excluded, outside a price bound) never enter. Memory is one block's scores
    plus ``depth`` candidates per row.

    Args:
        rows: Query rows.
        depth: Candidates kept per row.
    """

    def __init__(self, rows: int, depth: int):
        self.depth = depth
        self.scores = np.full((rows, 0), -np.inf, dtype=np.float32)
        self.keys = np.zeros((rows, 0), dtype=np.int64)
        self.ranks = np.zeros((rows, 0), dtype=np.int64)

    def add(self, keys: np.ndarray, ranks: np.ndarray, scores: np.ndarray) -> None:
        """Keeps the best ``depth`` per row of the pool so far and one block.

        Args:
            keys: The block's item keys (their row in the item matrix), shape (b,).
            ranks: The block's items' positions in item id order, shape (b,).
            scores: Query rows x the block's items (float32; ``-inf``: never).
        """
        if scores.shape[1] == 0 or scores.shape[0] == 0:
            return
        merged = np.concatenate([self.scores, scores], axis=1)
        merged_keys = np.concatenate([self.keys, np.broadcast_to(keys, scores.shape)], axis=1)
        merged_ranks = np.concatenate([self.ranks, np.broadcast_to(ranks, scores.shape)], axis=1)
        keep = min(self.depth, merged.shape[1])
        if keep < merged.shape[1]:
            chosen = np.argpartition(-merged, keep - 1, axis=1)[:, :keep]
            bound = np.take_along_axis(merged, chosen, axis=1).min(axis=1)
            # Rows where argpartition split items tied at the bound: the lower id ranks win.
            tied_all = (merged == bound[:, None]).sum(axis=1)
            tied_kept = (np.take_along_axis(merged, chosen, axis=1) == bound[:, None]).sum(axis=1)
            for row in np.flatnonzero((tied_all > tied_kept) & np.isfinite(bound)).tolist():
                above = np.flatnonzero(merged[row] > bound[row])
                tied = np.flatnonzero(merged[row] == bound[row])
                tied = tied[np.argsort(merged_ranks[row, tied], kind="stable")][: keep - len(above)]
                chosen[row] = np.concatenate([above, tied])
            merged = np.take_along_axis(merged, chosen, axis=1)
            merged_keys = np.take_along_axis(merged_keys, chosen, axis=1)
            merged_ranks = np.take_along_axis(merged_ranks, chosen, axis=1)
        self.scores, self.keys, self.ranks = merged, merged_keys, merged_ranks

    def results(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per row: (item keys, scores), best first (ties by id order); fewer than ``depth`` when few items were eligible."""
        order = np.lexsort((self.ranks, -self.scores), axis=1) if self.scores.size else self.scores.astype(np.int64)
        scores = np.take_along_axis(self.scores, order, axis=1)
        keys = np.take_along_axis(self.keys, order, axis=1)
        finite = np.isfinite(scores)
        return [(keys[row][finite[row]], scores[row][finite[row]]) for row in range(len(scores))]


def scoring_device(requested: str) -> str:
    """``cpu`` or ``cuda`` for ``recommend.device`` (``auto``: CUDA when this machine has an NVIDIA GPU).

    ``auto`` looks for the NVIDIA driver before importing torch, so CPU
    executors never pay torch's import for the scoring.
    """
    if requested == "auto":
        if not os.path.exists("/dev/nvidiactl"):
            return "cpu"
        try:
            import torch
        except ImportError:
            return "cpu"
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


def block_scores(queries: np.ndarray, items: np.ndarray, device: str) -> np.ndarray:
    """queries @ items.T in float32, on the CPU or on CUDA."""
    if device == "cpu":
        return queries @ items.T
    import torch

    with torch.no_grad():
        product = torch.from_numpy(queries).to(device) @ torch.from_numpy(items).to(device).T
    return product.cpu().numpy()


class ApproximateTopK:
    """Approximate inner-product search over a whole item matrix with a FAISS HNSW index.

    For catalogs too large to scan per user block (``recommend.ann_min_items``):
    the index is built once per Python worker and kept, so its memory follows
    the catalog, not the block sizes.

    Args:
        item_vectors: Unit vectors of the items, shape (i, d); results name their rows.
        neighbours: HNSW graph degree (M).
    """

    def __init__(self, item_vectors: np.ndarray, neighbours: int = 32):
        import faiss

        self.size = len(item_vectors)
        self.index = faiss.IndexHNSWFlat(item_vectors.shape[1], neighbours, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efSearch = 128
        self.index.add(np.ascontiguousarray(item_vectors, dtype=np.float32))

    def search(self, queries: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, item rows) of the ``depth`` best items per query, shape (q, depth); row -1 when fewer exist."""
        depth = max(1, min(depth, self.size))
        return self.index.search(np.ascontiguousarray(queries, dtype=np.float32), depth)
