"""The learned interest model at inference time (numpy only; torch trains it, see ``training``).

A user's interest is attention-pooled over their last N history entries
(the seed design w_i = softmax_i(x_i^T A q), interest = sum_i w_i x_i) with
everything learned from the logs:

    x_i   = W_h h_i + E_kind[k_i] + E_in[item_i]          (entry i, newest first)
    q     = mean_i x_i
    l_i   = x_i^T A q / sqrt(h) + b_kind[k_i] + b_pos[i] + b_age[age_i]
    r     = sum_i softmax(l)_i x_i                        (short term: the recent sequence)

and, when the model has a long-term part, a factor over the user's WHOLE history
(FISM / asymmetric SVD style), gated against the short-term readout:

    z_i   = W_lh h_i + L_kind[k_i] + L_in[item_i]         (every entry i ever folded)
    s     = sum_i z_i,   n = number of entries             (kept incrementally: a running sum)
    l     = s / n^alpha
    g     = sigmoid(w_r . r + w_l . l + c)
    u     = g r + (1 - g) l

(alpha, w_r, w_l and c learned; without the long-term part u = r).

with h_i the frozen encoder's vector of the entry (item or text), k_i its type,
age_i a log2 bucket of its age in days relative to the newest entry, and
E_in an embedding of the entry's item when the model was trained on it (zero
otherwise). An item j is represented by

    v_j = W_i e_j + E_out[j],   b_j = bias_j + pop_weight * log(1 + count_j)

(E_out and bias_j zero/``cold_bias`` for items the model never saw, so a new
item is scored by its text alone). The score blends this content-and-ID score
with item-kNN co-occurrence over the user's recent items, whose weights were
fitted on a validation split:

    score(u, j) = u . v_j + b_j + knn_weight * sum_r knn_decay^r sim(item_r, j)
                  [+ s . Q_j,  s = sum_i P[item_i] over every entry ever folded]

with item_r the distinct items of the recent history, newest first, and sim
the cosine of binary co-occurrence (top ``neighbors`` per item kept). The
bracketed whole-history term, when the model has one, is EASE's item-to-item
regression kept at rank r (``training.history_factors``; the blend weight is
folded into Q), with s a running sum like the long-term part's. The terms
but the kNN one are one dot product of ``[u, s, 1]`` with ``[v_j, Q_j, b_j]``,
which is how the recommend stage's blocked scoring applies them; the kNN term
is a sparse bonus per user.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np

from interestlake import constants as C

# Entry kinds the model knows, in embedding order.
KINDS = (*C.EVENT_TYPES, C.EVENT_REVIEW)
AGE_BUCKETS = 16
_SECONDS_PER_DAY = 86_400.0
_ARRAYS = ("w_hist", "w_item", "attention", "kind_emb", "kind_bias", "pos_bias", "age_bias",
           "item_in", "item_out", "item_bias", "item_pop", "neighbor_idx", "neighbor_sim")
# The long-term part (all or none of them): models saved before it existed have none.
LONG_TERM_ARRAYS = ("long_hist", "long_kind", "long_item", "long_alpha", "gate")
# The whole-history item-to-item term (both or none): P (n, r) read by the user side, Q (n, r)
# with the blend weight folded in, read by the item side.
HISTORY_ARRAYS = ("history_in", "history_out")
# model.uri value that asks for the untrained pooling even when a champion exists.
NO_MODEL = "none"
MODEL_FILE = "interest_model.npz"
META_FILE = "interest_model.json"


def kind_index(kinds: Sequence[str]) -> np.ndarray:
    """Index of each kind in ``KINDS`` (an unknown kind takes the last slot)."""
    lookup = {kind: i for i, kind in enumerate(KINDS)}
    return np.array([lookup.get(kind, len(KINDS) - 1) for kind in kinds], dtype=np.int64)


def age_buckets(seconds: np.ndarray, newest: float) -> np.ndarray:
    """log2 bucket of each entry's age in days relative to the newest entry (0 = same day)."""
    days = np.maximum(newest - np.asarray(seconds, dtype=np.float64), 0.0) / _SECONDS_PER_DAY
    return np.minimum(np.floor(np.log2(1.0 + days)), AGE_BUCKETS - 1).astype(np.int64)


@dataclass
class InterestModel:
    """Trained parameters and item statistics (see the module docstring for the formulas).

    Attributes:
        item_ids: Items the model was trained on; rows of the item arrays follow them.
        arrays: ``w_hist`` (d, h), ``w_item`` (d, h), ``attention`` (h, h), ``kind_emb`` (K, h),
            ``kind_bias`` (K,), ``pos_bias`` (N,), ``age_bias`` (16,), ``item_in``/``item_out``
            (n, h), ``item_bias`` (n,), ``item_pop`` (n,) log(1 + count), ``neighbor_idx``/
            ``neighbor_sim`` (n, M) (index -1: no neighbour); optionally the long-term part
            ``long_hist`` (d, h), ``long_kind`` (K, h), ``long_item`` (n, h), ``long_alpha`` (1,),
            ``gate`` (2h + 1,) = [w_r, w_l, c].
        meta: Blend weights (``knn_weight``, ``knn_decay``, ``pop_weight``), ``cold_bias``,
            ``context`` N, training parameters, data versions and validation metrics.
    """

    item_ids: np.ndarray
    arrays: dict[str, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        missing = [name for name in _ARRAYS if name not in self.arrays]
        partial = [name for name in LONG_TERM_ARRAYS if name not in self.arrays]
        partial = partial if 0 < len(partial) < len(LONG_TERM_ARRAYS) else []
        partial += [name for name in HISTORY_ARRAYS if name not in self.arrays] if any(
            name in self.arrays for name in HISTORY_ARRAYS) else []
        if missing or partial:
            raise ValueError(f"interest model lacks array(s) {missing or partial}")
        self.item_ids = np.asarray(self.item_ids, dtype=object)
        self._row = {item: row for row, item in enumerate(self.item_ids.tolist())}

    @property
    def dim(self) -> int:
        """Length of the vectors the pipeline stores and scores: h + r (the history term's) + 1 (the bias slot)."""
        return int(self.arrays["w_item"].shape[1]) + self.history_rank + 1

    @property
    def history_rank(self) -> int:
        """r, the slots of the whole-history term (0: the model has none)."""
        return int(self.arrays["history_in"].shape[1]) if "history_in" in self.arrays else 0

    @property
    def context(self) -> int:
        return int(self.meta["context"])

    @property
    def whole_history(self) -> bool:
        """Whether the user vector also reads the whole history (``long_terms`` sums): the gated
        long-term part (``model.long_term``), the history term, or both."""
        return self._gated or self.history_rank > 0

    @property
    def _gated(self) -> bool:
        return "long_item" in self.arrays

    def long_terms(self, vectors: np.ndarray, kinds: Sequence[str], item_ids: Sequence[str | None]) -> tuple[np.ndarray, int]:
        """(running sum (h + r,) float64, count) of some history entries: what a user's sums add.

        The first h values sum z_i (zeros without the gated long-term part), the last r the
        history term's P rows of the entries' items. The sums of disjoint parts of a history
        add up to the sum of the whole, which is how the interests stage keeps them
        incrementally.
        """
        h, a = int(self.arrays["w_item"].shape[1]), self.arrays
        out = np.zeros(h + self.history_rank, np.float64)
        if not self.whole_history or not len(vectors):
            return out, len(vectors)
        rows = self.rows(list(item_ids))
        known = rows >= 0
        if self._gated:
            z = np.asarray(vectors, dtype=np.float64) @ a["long_hist"] + a["long_kind"][kind_index(list(kinds))]
            z[known] += a["long_item"][rows[known]]
            out[:h] = z.sum(axis=0)
        if self.history_rank:
            out[h:] = a["history_in"][rows[known]].astype(np.float64).sum(axis=0)
        return out, len(vectors)

    def rows(self, item_ids: Sequence[str | None]) -> np.ndarray:
        """Row of each item in the model's item arrays, -1 when unknown (or None)."""
        # None is never a key, so .get gives it -1 too; map + fromiter run the lookups without a Python frame each.
        return np.fromiter(map(self._row.get, item_ids, repeat(-1)), dtype=np.int64, count=len(item_ids))

    def user_vector(
        self, vectors: np.ndarray, kinds: Sequence[str], seconds: np.ndarray, item_ids: Sequence[str | None],
        long_sum: np.ndarray | None = None, long_count: int | None = None,
    ) -> np.ndarray:
        """``[u, 1]`` of one user from their recent entries, newest first (at most ``context`` used).

        Args:
            vectors: Encoder vectors of the entries, (m, d).
            kinds: Entry kinds (event type or ``review``).
            seconds: Entry times, epoch seconds.
            item_ids: The entry's item (None for searches).
            long_sum: The user's running ``long_terms`` sum over their whole history, with
                ``long_count``; None takes the long-term part over the entries given
                (all m of them), for callers that hold no more of the history.

        Returns:
            ``[u, s, 1]`` with s the history term's sum (``history_rank`` slots, none
            without it), (h + r + 1,) float32.
        """
        n = min(len(vectors), self.context)
        if n == 0:
            raise ValueError("need at least one recent history entry")
        a = self.arrays
        if self.whole_history and long_sum is None:
            long_sum, long_count = self.long_terms(vectors, kinds, item_ids)
        vectors = np.asarray(vectors, dtype=np.float32)[:n]
        seconds = np.asarray(seconds, dtype=np.float64)[:n]
        kinds_i = kind_index(list(kinds)[:n])
        rows = self.rows(list(item_ids)[:n])
        x = vectors @ a["w_hist"] + a["kind_emb"][kinds_i]
        known = rows >= 0
        x[known] += a["item_in"][rows[known]]
        query = x.mean(axis=0)
        logits = (x @ a["attention"]) @ query / np.sqrt(x.shape[1])
        logits = logits + a["kind_bias"][kinds_i] + a["pos_bias"][np.arange(n)] + a["age_bias"][age_buckets(seconds, seconds.max())]
        weights = np.exp(logits - logits.max())
        pooled = (weights / weights.sum()) @ x
        h = len(pooled)
        long_sum = np.asarray(long_sum, dtype=np.float64) if self.whole_history else np.zeros(h)
        if self._gated:
            pooled = self.gated(pooled, long_sum[:h], int(long_count or 0))
        return np.r_[pooled, long_sum[h:], 1.0].astype(np.float32)

    def gated(self, short: np.ndarray, long_sum: np.ndarray, count: int) -> np.ndarray:
        """u = g r + (1 - g) l with l = s / n^alpha (the module docstring's formulas)."""
        a = self.arrays
        h = len(short)
        long = long_sum / max(count, 1) ** float(a["long_alpha"][0])
        gate = a["gate"]
        g = 1.0 / (1.0 + np.exp(-(short @ gate[:h] + long @ gate[h:2 * h] + gate[-1])))
        return g * short + (1.0 - g) * long

    def item_vectors(self, item_ids: Sequence[str], embeddings: np.ndarray) -> np.ndarray:
        """``[v_j, Q_j, b_j]`` of items from their encoder vectors, (n, h + r + 1) (Q_j: the history
        term's item side, zero for an item the model never saw; none without the term)."""
        a = self.arrays
        h = int(a["w_item"].shape[1])
        embeddings = np.asarray(embeddings, dtype=np.float32)
        out = np.zeros((len(item_ids), self.dim), dtype=np.float32)
        out[:, :h] = embeddings @ a["w_item"] if len(item_ids) else 0.0
        out[:, -1] = float(self.meta["cold_bias"])
        rows = self.rows(item_ids)
        known = rows >= 0
        out[known, :h] += a["item_out"][rows[known]]
        if self.history_rank:
            out[known, h:-1] = a["history_out"][rows[known]]
        out[known, -1] = a["item_bias"][rows[known]] + float(self.meta["pop_weight"]) * a["item_pop"][rows[known]]
        return out

    def knn_bonus(self, recent_items: Sequence[str | None]) -> dict[str, float]:
        """kNN term per item for one user's recent history items (newest first, repeats ignored)."""
        terms = (self.knn_seeds([recent_items]) @ self.neighbor_matrix()).tocoo()
        return {self.item_ids[j]: value for j, value in zip(terms.col.tolist(), terms.data.tolist())}

    def knn_seeds(self, recent_per_row: Sequence[Sequence[str | None] | None]):
        """Each query row's seed weights: a (rows, catalog) float64 ``scipy.sparse`` CSR matrix.

        A row's term for item j is the sum, over its distinct known recent items s (newest
        first, rank r among them), of ``knn_weight * knn_decay**r * sim(s -> j)``: this
        matrix times ``neighbor_matrix()``. Each row's entries are stored newest seed
        first, so the product sums every item's addends seed by seed in history order and
        gives the same float64 sums wherever it is taken.

        Args:
            recent_per_row: Each query row's recent item ids, newest first (None entries and
                unknown ids add nothing, repeats count once).
        """
        import scipy.sparse as sp

        weight, decay = float(self.meta["knn_weight"]), float(self.meta["knn_decay"])
        lengths = np.array([len(recent or ()) for recent in recent_per_row], dtype=np.int64)
        seeds = self.rows([item for recent in recent_per_row for item in (recent or ())])
        owners = np.repeat(np.arange(len(lengths)), lengths)
        # The first occurrence of each (row, item) in history order is a seed; repeats are not.
        _, first = np.unique(owners * (len(self.item_ids) + 1) + seeds + 1, return_index=True)
        keep = np.zeros(len(seeds), dtype=bool)
        keep[first] = True
        keep &= seeds >= 0
        if weight == 0:
            keep[:] = False
        owners, seeds = owners[keep], seeds[keep]
        counts = np.bincount(owners, minlength=len(lengths))
        # Rank of each seed among its row's seeds (rows come in order, seeds newest first).
        ranks = np.arange(len(owners)) - np.repeat(np.r_[0, np.cumsum(counts)][:-1], counts)
        indptr = np.r_[0, np.cumsum(counts)]
        return sp.csr_matrix((weight * decay ** ranks.astype(np.float64), seeds, indptr),
                             shape=(len(lengths), len(self.item_ids)))

    def neighbor_columns(self, columns: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Each catalog item's neighbours as columns, (catalog, m) int64 (-1: none), and sim(s -> j), (catalog, m).

        Args:
            columns: The column of each catalog row (-1: dropped), e.g. its key in the
                recommend stage's item matrix; None: the catalog's rows themselves.
        """
        neighbors, sims = self.arrays["neighbor_idx"].astype(np.int64), self.arrays["neighbor_sim"]
        if columns is None:
            return np.where(neighbors >= 0, neighbors, -1), sims
        return np.where(neighbors >= 0, np.asarray(columns, dtype=np.int64)[np.maximum(neighbors, 0)], -1), sims

    def neighbor_matrix(self):
        """sim(s -> j) of every item s and neighbour j: a (catalog, catalog) float64 ``scipy.sparse`` CSR matrix."""
        import scipy.sparse as sp

        mapped, sims = self.neighbor_columns()
        known = mapped >= 0
        indptr = np.r_[0, np.cumsum(known.sum(axis=1))]
        return sp.csr_matrix((sims[known].astype(np.float64), mapped[known], indptr),
                             shape=(len(self.item_ids), len(self.item_ids)))

    def save(self, folder: str | Path) -> Path:
        """Writes the model to ``folder`` (two files); returns the folder."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(folder / MODEL_FILE, item_ids=self.item_ids.astype(str), **self.arrays)
        (folder / META_FILE).write_text(json.dumps(self.meta, indent=2, sort_keys=True, default=str))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> InterestModel:
        """Reads a model written by ``save``.

        Raises:
            FileNotFoundError: The folder does not hold a saved model.
        """
        folder = Path(folder)
        if not (folder / MODEL_FILE).exists():
            raise FileNotFoundError(f"{folder}: no {MODEL_FILE}; not a saved interest model")
        with np.load(folder / MODEL_FILE, allow_pickle=False) as data:
            arrays = {name: data[name] for name in (*_ARRAYS, *LONG_TERM_ARRAYS, *HISTORY_ARRAYS) if name in data.files}
            item_ids = data["item_ids"].astype(object)
        return cls(item_ids, arrays, json.loads((folder / META_FILE).read_text()))


def load_model(settings) -> InterestModel | None:
    """The model the stages apply: ``model.uri`` as resolved when the command started (a local folder).

    None (the untrained pooling) when ``model.uri`` is unset or ``none``. A
    registered-model URI must have been resolved first
    (``interestlake.models.interest_registry.resolve_model``), so that every stage
    of a run applies the same version.

    Raises:
        ValueError: ``model.uri`` is an unresolved registry URI.
        FileNotFoundError: The folder holds no saved model.
    """
    uri = settings.model.uri
    if not uri or uri == NO_MODEL:
        return None
    if uri.startswith("models:/"):
        raise ValueError(f"model.uri {uri!r} must be resolved to a version before the stages run")
    # Kept per process while its files are unchanged: a long-running `stream` (and each stage of
    # one refresh) applies the same version batch after batch, and reading it costs seconds.
    files = [Path(uri) / name for name in (MODEL_FILE, META_FILE)]
    stamp = (str(Path(uri).resolve()), *((f.stat().st_mtime_ns, f.stat().st_size) for f in files if f.exists()))
    if _LOADED.get("stamp") != stamp:
        _LOADED.clear()
        _LOADED.update(stamp=stamp, model=InterestModel.load(uri))
    return _LOADED["model"]


_LOADED: dict[str, Any] = {}
