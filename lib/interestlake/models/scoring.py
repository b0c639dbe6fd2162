"""Retrieval arithmetic of the recommend stage: the one exact top-K pool, block products, the kNN bonus.

numpy on the CPU; the block products run on CUDA through torch when asked
(``recommend.device``), and FAISS answers approximate searches for large catalogs.
Both are imported only when used.
"""

from __future__ import annotations

import os
import numpy as np


# Above this many (query row x item) cells a block's kNN term is kept as sorted pairs, not a
# dense matrix: 16M cells are 64 MiB of float32 (the float64 sums are made a few rows at a
# time). A block of 1,024 users (``recommend.user_block_size``) stays dense up to 15,000 items.
_DENSE_BONUS_CELLS = 16_000_000
# (Query row x item) sums of the dense term made by one ``np.bincount``: 320 KB of float64,
# which stay in a core's cache (8 rows of 5,000 items was the fastest of 4 to 64 rows).
_BINCOUNT_CELLS = 40_000


class KnnBonus:
    """The learned model's item-kNN term of a block of query rows, over the item matrix's keys.

    A user's term touches a few hundred to a few thousand items: for each of the row's seeds
    (``InterestModel.knn_seeds``: its distinct recent items, newest first, with their decayed
    weights), the seed's weight times its similarity to each of its neighbours. The addends
    go through ``np.bincount`` (a few rows per call for the dense matrix, all at once for the
    pairs), which adds each item's addends in the order given: row by row, seed by seed in
    history order, so the float64 sums are exactly
    those of ``InterestModel.knn_bonus`` (the seeds times the neighbour matrix), then float32.
    The term is kept as a dense rows x items matrix while that is small, so each block of the
    scan adds one slice; otherwise as (item key, row) pairs sorted by key, so each block
    finds its own pairs with one binary search. (A sparse matrix product took twice as long
    as the ``bincount``; a Python loop per row, or a sort per block, more than the products.)

    Args:
        seeds: The rows' seed weights, a (rows, catalog) CSR matrix (``InterestModel.knn_seeds``).
        neighbor_keys, neighbor_sims: Each catalog item's neighbours as item matrix keys and
            their similarities, (catalog, m) each, as ``KnnBonus.neighbours`` prepares them.
        size: Items in the item matrix.
        dense_cells: Largest rows x items kept dense.
        bincount_cells: About how many (row x item) sums of the dense term one ``np.bincount`` makes.
    """

    def __init__(self, seeds, neighbor_keys: np.ndarray, neighbor_sims: np.ndarray, size: int,
                 dense_cells: int = _DENSE_BONUS_CELLS, bincount_cells: int = _BINCOUNT_CELLS):
        self.rows, self.size = seeds.shape[0], size
        self.dense: np.ndarray | None = None
        owner = np.repeat(np.arange(self.rows, dtype=np.int64), np.diff(seeds.indptr))
        if self.rows * self.size <= dense_cells:
            # A few rows at a time, from their neighbours to their float64 sums, so that all of it
            # stays in the CPU's cache (the whole block at once took 2.5x as long, most of it
            # writing memory).
            self.dense = np.empty((self.rows, self.size), np.float32)
            step = max(1, bincount_cells // max(size, 1))
            for first in range(0, self.rows, step):
                last = min(first + step, self.rows)
                lo, hi = seeds.indptr[first], seeds.indptr[last]
                cells = neighbor_keys[seeds.indices[lo:hi]]
                cells += ((owner[lo:hi] - first) * size)[:, None]
                values = neighbor_sims[seeds.indices[lo:hi]].astype(np.float64)
                values *= seeds.data[lo:hi, None]
                sums = np.bincount(cells.ravel(), weights=values.ravel(), minlength=(last - first) * size)
                self.dense[first:last] = sums.reshape(last - first, size)
            return
        cells = neighbor_keys[seeds.indices]
        cells += (owner * size)[:, None]
        values = neighbor_sims[seeds.indices].astype(np.float64)
        values *= seeds.data[:, None]
        cells, values = cells.ravel(), values.ravel()
        real = values != 0  # the padding of items with fewer neighbours adds nothing
        found, position = np.unique(cells[real], return_inverse=True)
        sums = np.bincount(position, weights=values[real], minlength=len(found))
        codes = (found % size) * self.rows + found // size
        order = np.argsort(codes, kind="stable")
        self.codes, self.values = codes[order], sums[order].astype(np.float32)

    @staticmethod
    def neighbours(keys: np.ndarray, sims: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``InterestModel.neighbor_columns``' arrays as the constructor takes them, prepared once per item matrix.

        A missing neighbour (key -1) becomes key 0 with similarity 0: it adds 0.0 to a sum,
        which leaves it as it is, so no block pays for filtering them out.
        """
        known = keys >= 0
        return np.where(known, keys, 0).astype(np.int64), np.where(known, sims, 0).astype(np.float32)

    def add_to(self, scores: np.ndarray, start: int) -> None:
        """Adds the term of items ``start`` .. ``start + scores.shape[1]`` to ``scores`` (query rows x those items) in place."""
        stop = start + scores.shape[1]
        if self.dense is not None:
            scores += self.dense[:, start:stop]
            return
        first, last = np.searchsorted(self.codes, [start * self.rows, stop * self.rows])
        codes = self.codes[first:last]
        scores[codes % self.rows, codes // self.rows - start] += self.values[first:last]

    def at(self, row: int, keys: np.ndarray) -> np.ndarray:
        """The term of query row ``row`` for the items ``keys`` (float32, 0 where it has none)."""
        keys = np.asarray(keys, dtype=np.int64)
        if self.dense is not None:
            return self.dense[row, keys]
        if not len(self.codes):
            return np.zeros(len(keys), np.float32)
        wanted = keys * self.rows + row
        slot = np.minimum(np.searchsorted(self.codes, wanted), len(self.codes) - 1)
        return np.where(self.codes[slot] == wanted, self.values[slot], np.float32(0)).astype(np.float32)


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
        # The pool starts full of ``-inf`` placeholders, which any eligible item displaces and
        # ``results`` never returns: every block then takes the same path.
        self.scores = np.full((rows, depth), -np.inf, dtype=np.float32)
        self.keys = np.zeros((rows, depth), dtype=np.int64)
        self.ranks = np.zeros((rows, depth), dtype=np.int64)
        self._filled = False  # whether every row holds ``depth`` eligible items (no placeholder left)

    def add(self, keys: np.ndarray, ranks: np.ndarray, scores: np.ndarray) -> None:
        """Keeps the best ``depth`` per row of the pool so far and one block.

        Args:
            keys: The block's item keys (their row in the item matrix), shape (b,), or
                (rows, b) when each row has its own items (an approximate search).
            ranks: The block's items' positions in item id order, shaped as ``keys``.
            scores: Query rows x the block's items (float32; ``-inf``: never).
        """
        if scores.shape[1] == 0 or scores.shape[0] == 0:
            return
        if keys.ndim == 2:
            self._merge(slice(None), keys, ranks, scores)
            return
        # Only a block item scoring at least a row's floor can enter its pool (ties too: ids
        # decide them in the merge). The floor is the row's worst pooled score; while a row
        # still holds placeholders (the first block), the depth-th best score of an evenly
        # spaced sample of the block's columns: at least ``depth`` items of the block reach it,
        # so none of the row's best ``depth`` is below it. Either way few items of a wide block
        # pass, and the rows merge them alone instead of partitioning the whole block
        # (``argpartition`` costs about 35x a comparison per score).
        worst = self.scores.min(axis=1)
        if not self._filled:
            worst = np.maximum(worst, self._sample_floor(scores))
        worst = np.maximum(worst, np.finfo(np.float32).min)
        width = scores.shape[1]
        # The passing cells, row by row and columns ascending: one flat search of the block
        # (a 2-D ``np.nonzero`` took 10x as long).
        hit_rows, columns = np.divmod(np.flatnonzero(scores >= worst[:, None]), width)
        counts = np.bincount(hit_rows, minlength=len(scores))
        narrow = counts * 4 <= width
        wide = np.flatnonzero(~narrow)
        if len(wide):
            self._merge(wide, keys, ranks, scores[wide])
            kept = narrow[hit_rows]
            hit_rows, columns = hit_rows[kept], columns[kept]
        if len(hit_rows):
            rows = np.flatnonzero(narrow & (counts > 0))
            counts = counts[rows]
            slot = np.arange(len(hit_rows)) - np.repeat(np.r_[0, np.cumsum(counts)][:-1], counts)
            at = np.repeat(np.arange(len(rows)), counts)  # each hit's row of ``rows``
            picked = np.zeros((len(rows), int(counts.max())), dtype=np.int64)
            picked[at, slot] = columns
            found = np.full(picked.shape, -np.inf, dtype=np.float32)  # padding never enters
            found[at, slot] = scores[hit_rows, columns]
            self._merge(rows, keys[picked], ranks[picked], found)
        if not self._filled:
            self._filled = bool(np.isfinite(self.scores).all())

    def _sample_floor(self, scores: np.ndarray) -> np.ndarray:
        """Per row, the ``depth``-th best score of every ``step``-th column of ``scores`` (-inf: too few columns).

        The step balances the sample's partition (columns / step scores a row) against the
        merge of what passes (about depth x step a row): about sqrt(columns / depth).
        """
        columns = scores.shape[1]
        step = int(np.sqrt(columns / self.depth))
        if step < 2:
            return np.full(len(scores), -np.inf, np.float32)
        sample = scores[:, ::step]
        return np.partition(sample, sample.shape[1] - self.depth, axis=1)[:, sample.shape[1] - self.depth]

    def _merge(self, rows, keys: np.ndarray, ranks: np.ndarray, scores: np.ndarray) -> None:
        """Merges one block into the pool's ``rows`` (an index array, or every row: an approximate search's results)."""
        pool_scores, pool_keys, pool_ranks = self.scores[rows], self.keys[rows], self.ranks[rows]
        held = pool_scores.shape[1]
        merged = np.concatenate([pool_scores, scores], axis=1) if held else scores
        keep = min(self.depth, merged.shape[1])
        if keep == merged.shape[1]:
            chosen = np.broadcast_to(np.arange(keep), merged.shape)
        else:
            # The keep largest of each row (the last columns of an ascending partition: no negated copy).
            chosen = np.argpartition(merged, merged.shape[1] - keep, axis=1)[:, merged.shape[1] - keep:]
            kept = np.take_along_axis(merged, chosen, axis=1)
            bound = kept.min(axis=1)
            # Rows where argpartition split items tied at the bound: the lower id ranks win.
            tied_all = (merged == bound[:, None]).sum(axis=1)
            tied_kept = (kept == bound[:, None]).sum(axis=1)
            for row in np.flatnonzero((tied_all > tied_kept) & np.isfinite(bound)).tolist():
                above = np.flatnonzero(merged[row] > bound[row])
                tied = np.flatnonzero(merged[row] == bound[row])
                block_ranks = ranks[row] if ranks.ndim == 2 else ranks
                tied_ranks = np.where(tied < held, pool_ranks[row, np.minimum(tied, held - 1)] if held else 0,
                                      block_ranks[np.maximum(tied - held, 0)])
                tied = tied[np.argsort(tied_ranks, kind="stable")][: keep - len(above)]
                chosen[row] = np.concatenate([above, tied])
        # Keys and ranks of the chosen columns, without materialising rows x block copies of them.
        old = chosen < held
        from_pool = np.minimum(chosen, max(held - 1, 0))
        from_block = np.maximum(chosen - held, 0)
        new_keys = np.where(old, np.take_along_axis(pool_keys, from_pool, axis=1) if held else 0, _columns(keys, from_block))
        new_ranks = np.where(old, np.take_along_axis(pool_ranks, from_pool, axis=1) if held else 0,
                             _columns(ranks, from_block))
        new_scores = np.take_along_axis(merged, chosen, axis=1)
        if isinstance(rows, slice):
            self.keys, self.ranks, self.scores = new_keys, new_ranks, new_scores
        else:
            self.keys[rows], self.ranks[rows], self.scores[rows] = new_keys, new_ranks, new_scores

    def results(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per row: (item keys, scores), best first (ties by id order); fewer than ``depth`` when few items were eligible."""
        order = np.lexsort((self.ranks, -self.scores), axis=1) if self.scores.size else self.scores.astype(np.int64)
        scores = np.take_along_axis(self.scores, order, axis=1)
        keys = np.take_along_axis(self.keys, order, axis=1)
        finite = np.isfinite(scores)
        return [(keys[row][finite[row]], scores[row][finite[row]]) for row in range(len(scores))]


def _columns(values: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """``values`` (shape (b,), or (rows, b)) at the per-row ``columns`` (rows, c)."""
    return np.take_along_axis(values, columns, axis=1) if values.ndim == 2 else values[columns]


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


def block_scores(queries: np.ndarray, items: np.ndarray, device: str, out: np.ndarray | None = None) -> np.ndarray:
    """queries @ items.T in float32, on the CPU or on CUDA; written into ``out`` when given (and returned)."""
    if device == "cpu":
        return np.matmul(queries, items.T, out=out)
    import torch

    with torch.no_grad():
        product = (torch.from_numpy(queries).to(device) @ torch.from_numpy(items).to(device).T).cpu().numpy()
    if out is None:
        return product
    out[...] = product
    return out


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
