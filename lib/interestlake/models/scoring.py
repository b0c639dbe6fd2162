"""Top-K cosine scoring of users against items, with reasons.

numpy on the CPU; the block products run on CUDA through torch when asked
(``recommend.device``), and FAISS answers approximate top K for large catalogs.
Both are imported only when used.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

import numpy as np

from interestlake import constants as C

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
_LABEL_LIMIT = 80


@dataclass(frozen=True)
class SparseBonus:
    """Scores added to some (user, item) pairs of a user block: the learned model's item-kNN term.

    Kept as arrays, not a dict per user, because a user's kNN term touches hundreds of
    items and each item block would otherwise cost a Python loop over all of them.

    Attributes:
        users: Row of the user in the block, per pair.
        rows: The item's row in the model's catalog, per pair.
        values: The bonus (float32), per pair; (user, row) pairs are unique.
        catalog_rows: Item ids -> their catalog rows (-1 unknown).
        catalog_size: Rows in the catalog.
    """

    users: np.ndarray
    rows: np.ndarray
    values: np.ndarray
    catalog_rows: Callable[[Sequence[str]], np.ndarray]
    catalog_size: int

    def add_to(self, scores: np.ndarray, item_ids: Sequence[str]) -> None:
        """Adds the bonus of the block's items to ``scores`` (users x the block's items) in place."""
        if not len(self.values):
            return
        column = np.full(self.catalog_size, -1, dtype=np.int64)
        block_rows = self.catalog_rows(item_ids)
        known = block_rows >= 0
        column[block_rows[known]] = np.flatnonzero(known)
        columns = column[self.rows]
        here = columns >= 0
        scores[self.users[here], columns[here]] += self.values[here]


class RunningTopK:
    """The best ``k`` items of each user over a stream of item blocks.

    Items are ranked by score, ties by item id, so any split of the catalog into
    blocks (and any block order) gives the same lists. Memory is one block's
    scores plus ``k`` candidates per user.

    Args:
        user_vectors: Unit interest vectors, shape (u, d).
        k: Items to keep per user.
        excluded: For each user, item ids never to recommend.
        device: ``cpu`` (numpy) or ``cuda`` (torch) for the block products.
        bonus: Scores to add to (user, item) pairs (the learned model's
            item-kNN term); None: no bonus.
    """

    def __init__(
        self, user_vectors: np.ndarray, k: int, excluded: Sequence[Collection[str]], device: str = "cpu",
        bonus: SparseBonus | None = None,
    ):
        if len(excluded) != len(user_vectors):
            raise ValueError(f"{len(user_vectors)} users but {len(excluded)} exclusion lists")
        self.users = np.asarray(user_vectors, dtype=np.float32)
        self.device = device
        self.k = k
        self.excluded = excluded
        self.bonus = bonus
        self.best: list[list[tuple[float, str, np.ndarray]]] = [[] for _ in range(len(self.users))]

    def add(self, item_ids: Sequence[str], item_vectors: np.ndarray, score_vectors: np.ndarray | None = None) -> None:
        """Scores one block of items and keeps the best k per user.

        Args:
            item_ids: The block's items.
            item_vectors: Their unit vectors (i, d), kept with the results (for reasons).
            score_vectors: What the users' vectors are multiplied with, when not
                ``item_vectors`` (the learned model's item vectors).
        """
        if len(item_ids) == 0 or len(self.users) == 0:
            return
        scored = item_vectors if score_vectors is None else score_vectors
        scores = block_scores(self.users, np.asarray(scored, dtype=np.float32), self.device)
        position = {item: column for column, item in enumerate(item_ids)}
        if self.bonus is not None:
            self.bonus.add_to(scores, item_ids)
        for row, items in enumerate(self.excluded):
            columns = [position[item] for item in items if item in position]
            if columns:
                scores[row, columns] = -np.inf
        keep = min(self.k, len(item_ids))
        # Everything at least as good as the block's k-th best per user, ties included.
        kth = np.partition(scores, len(item_ids) - keep, axis=1)[:, len(item_ids) - keep]
        for row in range(len(scores)):
            columns = np.flatnonzero((scores[row] >= kth[row]) & np.isfinite(scores[row]))
            merged = self.best[row] + [(float(scores[row, c]), item_ids[c], item_vectors[c]) for c in columns]
            merged.sort(key=lambda entry: (-entry[0], entry[1]))
            self.best[row] = merged[: self.k]

    def results(self) -> list[list[tuple[str, float, np.ndarray]]]:
        """Per user: (item id, score, item vector), best first; fewer than k when few items are eligible."""
        return [[(item, score, vector) for score, item, vector in best] for best in self.best]


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


def block_scores(users: np.ndarray, items: np.ndarray, device: str) -> np.ndarray:
    """users @ items.T in float32, on the CPU or on CUDA."""
    if device == "cpu":
        return users @ items.T
    import torch

    with torch.no_grad():
        product = torch.from_numpy(users).to(device) @ torch.from_numpy(items).to(device).T
    return product.cpu().numpy()


class ApproximateTopK:
    """Approximate best ``k`` items per user from a FAISS HNSW inner-product index over the whole catalog.

    For catalogs too large to scan per user block (``recommend.ann_min_items``):
    the index is built once per Python worker and kept, so its memory follows
    the catalog, not the block sizes. Excluded items are dropped from a deeper
    search, so each user still gets ``k`` items when enough are eligible.

    Args:
        item_ids: Catalog item ids.
        item_vectors: Their unit vectors, shape (i, d).
        neighbours: HNSW graph degree (M).
    """

    def __init__(self, item_ids: Sequence[str], item_vectors: np.ndarray, neighbours: int = 32):
        import faiss

        self.item_ids = list(item_ids)
        self.item_vectors = np.ascontiguousarray(item_vectors, dtype=np.float32)
        self.index = faiss.IndexHNSWFlat(self.item_vectors.shape[1], neighbours, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efSearch = 128
        self.index.add(self.item_vectors)

    def search(self, user_vectors: np.ndarray, k: int, excluded: Sequence[Collection[str]]) -> list:
        """Per user: (item id, score, item vector), best first (like ``RunningTopK.results``)."""
        depth = min(len(self.item_ids), k + max((len(e) for e in excluded), default=0))
        scores, indices = self.index.search(np.ascontiguousarray(user_vectors, dtype=np.float32), depth)
        results = []
        for row, skip in enumerate(excluded):
            chosen = [
                (self.item_ids[i], float(s), self.item_vectors[i])
                for s, i in zip(scores[row], indices[row])
                if i >= 0 and self.item_ids[i] not in skip
            ]
            results.append(sorted(chosen, key=lambda entry: (-entry[1], entry[0]))[:k])
        return results


def reason_for(
    item_id: str,
    item_vector: np.ndarray,
    history_vectors: np.ndarray,
    kinds: Sequence[str],
    labels: Sequence[str],
    history_items: Sequence[str | None],
) -> str:
    """Short text naming why an item is recommended.

    Args:
        item_id: The recommended item.
        item_vector: Its unit vector.
        history_vectors: The user's recent history vectors, newest first, shape (m, d).
        kinds: Entry types (event type or ``review``) of the history.
        labels: Item titles or query texts of the history.
        history_items: Item ids of the history (None for searches).

    Returns:
        "You viewed this recently" when the item itself is in the recent history,
        else a sentence naming the most similar history entry.
    """
    for kind, seen in zip(kinds, history_items):
        if seen == item_id and kind in SAME_ITEM_TEMPLATES:
            return SAME_ITEM_TEMPLATES[kind]
    if len(history_vectors) == 0:
        return FALLBACK_REASON
    best = int(np.argmax(history_vectors @ item_vector))
    label = (labels[best] or "").strip()
    template = REASON_TEMPLATES.get(kinds[best])
    if not label or template is None:
        return FALLBACK_REASON
    if len(label) > _LABEL_LIMIT:
        label = label[: _LABEL_LIMIT - 1].rstrip() + "…"
    return template.format(label=label)
