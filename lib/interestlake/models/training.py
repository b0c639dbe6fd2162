"""Training the interest model (torch) on users' embedded histories; exports an ``InterestModel``.

Input: every user's history entries (time, kind, item, index of the entry's
frozen encoder vector) and the catalog's item vectors, as built by
``interestlake.pipeline.train`` from the Delta tables. Each item interaction
(the first event of a user on an item) is a next-item example whose context
is the user's newest N entries before it (entries of the same time about
other items included: Amazon reviews carry days only, and what was bought the
same day is what the pipeline will see as recent history too).

Fitting, all on the training data given:
1. validation split: each user's last interaction (users with >= 2) is held out,
   with every entry about it;
2. the network (``interest_model`` formulas) is trained on the other examples with
   a full softmax over the catalog (sampled softmax for catalogs over
   ``max_softmax_items``), early-stopped on validation NDCG@10;
3. blend weights (item-kNN weight and recency decay, popularity weight) are
   grid-searched on the same validation users, with co-occurrence and
   popularity counted on the training examples only (nothing of the
   validation interactions);
4. the network is refitted on every example for the chosen number of epochs and
   the item statistics recounted on all interactions.

torch is imported inside the functions: the driver and Airflow import this
module's callers without it.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from interestlake import constants as C
from interestlake.models.interest_model import AGE_BUCKETS, KINDS, InterestModel, age_buckets, kind_index

log = logging.getLogger("interestlake")
# Event types that are an interaction with an item, i.e. a next-item target.
TARGET_KINDS = (C.EVENT_VIEW, C.EVENT_CLICK, C.EVENT_CART, C.EVENT_PURCHASE, C.EVENT_RATE)
KNN_WEIGHTS = (0.0, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 1000.0)
KNN_DECAYS = (0.3, 0.6, 0.8, 1.0)
POP_WEIGHTS = (0.0, 0.3, 1.0, 3.0)


class NotEnoughData(ValueError):
    """The history holds no example to learn from (no user with two item interactions)."""


@dataclass(frozen=True)
class TrainParams:
    """Hyper-parameters (conf ``model``)."""

    dim: int = 64
    input_dim: int = 96
    epochs: int = 25
    patience: int = 3
    batch_size: int = 512
    learning_rate: float = 3e-3
    weight_decay: float = 1e-5
    dropout: float = 0.2
    neighbors: int = 100
    max_examples_per_user: int = 64
    max_softmax_items: int = 4096
    sampled_negatives: int = 1024
    seed: int = 42
    k: int = 10


@dataclass
class HistoryData:
    """Users' embedded history, as the trainer reads it.

    Attributes:
        vectors: Encoder vectors (V, d) float32 that entries and items point into.
        entries: One row per history entry: user_id, seconds (float), kind, item_id
            (None for searches), vec (row of ``vectors``).
        item_ids: Catalog items (the items that can be recommended and predicted).
        item_vec: Row of ``vectors`` of each catalog item.
    """

    vectors: np.ndarray
    entries: pd.DataFrame
    item_ids: np.ndarray
    item_vec: np.ndarray

    def __post_init__(self):
        if len(self.item_ids) != len(self.item_vec):
            raise ValueError(f"{len(self.item_ids)} items but {len(self.item_vec)} item vector rows")
        missing = {C.COL_USER_ID, "seconds", "kind", C.COL_ITEM_ID, "vec"} - set(self.entries.columns)
        if missing:
            raise ValueError(f"history entries lack column(s) {sorted(missing)}")

    def save(self, uri: str) -> None:
        """Writes the arrays (``.npy``) and the entries (Parquet) to a folder any process can read."""
        import pyarrow as pa
        import pyarrow.fs as pafs
        import pyarrow.parquet as pq

        fs, base = pafs.FileSystem.from_uri(uri)
        fs.create_dir(base, recursive=True)
        for name in ("vectors", "item_ids", "item_vec"):
            with fs.open_output_stream(f"{base}/{name}.npy") as out:
                np.save(out, np.asarray(getattr(self, name)).astype(str) if name == "item_ids" else getattr(self, name))
        pq.write_table(pa.Table.from_pandas(self.entries, preserve_index=False), f"{base}/entries.parquet", filesystem=fs)

    @classmethod
    def load(cls, uri: str) -> HistoryData:
        import pyarrow.fs as pafs
        import pyarrow.parquet as pq

        fs, base = pafs.FileSystem.from_uri(uri)
        arrays = {}
        for name in ("vectors", "item_ids", "item_vec"):
            with fs.open_input_file(f"{base}/{name}.npy") as stream:
                arrays[name] = np.load(stream, allow_pickle=False)
        entries = pq.read_table(f"{base}/entries.parquet", filesystem=fs).to_pandas()
        return cls(arrays["vectors"], entries, arrays["item_ids"].astype(object), arrays["item_vec"])


@dataclass
class Examples:
    """Next-item examples: padded contexts (newest first) and targets."""

    vec: np.ndarray
    kind: np.ndarray
    age: np.ndarray
    item: np.ndarray  # catalog row of the entry's item, -1 none
    mask: np.ndarray
    target: np.ndarray
    user: np.ndarray  # user_id of each example
    seconds: np.ndarray  # entry times (epoch seconds; 0 in padding)

    def __len__(self) -> int:
        return len(self.target)

    def take(self, rows: np.ndarray) -> Examples:
        return Examples(*(getattr(self, name)[rows] for name in ("vec", "kind", "age", "item", "mask", "target", "user", "seconds")))


@dataclass
class TrainResult:
    """The exported model and what the fitting measured."""

    model: InterestModel
    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)


def interactions(data: HistoryData) -> pd.DataFrame:
    """First item event of each (user, catalog item): user_id, item (catalog row), seconds, in time order."""
    rows = data.entries[data.entries["kind"].isin(TARGET_KINDS) & data.entries[C.COL_ITEM_ID].notna()]
    row_of = pd.Series(np.arange(len(data.item_ids)), index=pd.Index(data.item_ids))
    rows = rows[rows[C.COL_ITEM_ID].isin(row_of.index)]
    out = pd.DataFrame({
        C.COL_USER_ID: rows[C.COL_USER_ID].to_numpy(), "item": row_of[rows[C.COL_ITEM_ID]].to_numpy(),
        "seconds": rows["seconds"].to_numpy(),
    })
    out = out.sort_values([C.COL_USER_ID, "seconds", "item"], kind="stable")
    return out.drop_duplicates([C.COL_USER_ID, "item"], keep="first").reset_index(drop=True)


def validation_split(data: HistoryData) -> tuple[HistoryData, pd.DataFrame]:
    """(history without each user's last interaction, the held-out interactions) for users with >= 2."""
    first = interactions(data)
    counts = first.groupby(C.COL_USER_ID)["item"].transform("size")
    last = ~first.duplicated(C.COL_USER_ID, keep="last") & (counts >= 2)
    held = first[last]
    held_items = data.item_ids[held["item"].to_numpy()]
    key = pd.MultiIndex.from_arrays([held[C.COL_USER_ID].to_numpy(), held_items])
    entries = data.entries
    drop = pd.MultiIndex.from_arrays([entries[C.COL_USER_ID].to_numpy(), entries[C.COL_ITEM_ID].to_numpy()]).isin(key)
    kept = HistoryData(data.vectors, entries[~drop].reset_index(drop=True), data.item_ids, data.item_vec)
    return kept, held.reset_index(drop=True)


def build_examples(
    data: HistoryData, context: int, targets: pd.DataFrame | None = None, max_per_user: int | None = None
) -> Examples:
    """Contexts of next-item examples.

    Args:
        data: History the contexts are taken from.
        context: N, the newest entries kept per context.
        targets: user_id, item, seconds of the examples; None = every interaction of
            ``data`` (each context then holds only entries before it, or of the same
            time about other items). Given targets (validation) take the user's newest
            entries up to and including their time.
        max_per_user: Keep only each user's newest this many examples.
    """
    row_of = pd.Series(np.arange(len(data.item_ids)), index=pd.Index(data.item_ids))
    entries = newest_first(data.entries).assign(
        _item=lambda e: row_of.reindex(e[C.COL_ITEM_ID].to_numpy()).fillna(-1).to_numpy().astype(np.int64),
        _kind=lambda e: kind_index(e["kind"].tolist()),
    )
    if targets is None:
        targets = interactions(data)
    if max_per_user:
        targets = targets.groupby(C.COL_USER_ID, sort=False).tail(max_per_user)
    targets = targets.sort_values([C.COL_USER_ID, "seconds"], kind="stable")
    n = len(targets)
    out = Examples(
        np.zeros((n, context), np.int64), np.zeros((n, context), np.int64), np.zeros((n, context), np.int64),
        np.full((n, context), -1, np.int64), np.zeros((n, context), bool), targets["item"].to_numpy(np.int64),
        targets[C.COL_USER_ID].to_numpy(dtype=object), np.zeros((n, context), np.float64),
    )
    by_user = {user: frame for user, frame in entries.groupby(C.COL_USER_ID, sort=False)}
    keep = np.zeros(n, dtype=bool)
    row = 0
    for user, group in targets.groupby(C.COL_USER_ID, sort=False):
        frame = by_user.get(user)
        if frame is None:
            row += len(group)
            continue
        # Oldest first (the reverse of the pipeline's newest-first order), so a window
        # read backwards is exactly what the interests stage keeps as `recent`.
        frame = frame.iloc[::-1]
        secs = frame["seconds"].to_numpy()
        items, kinds, vecs = frame["_item"].to_numpy(), frame["_kind"].to_numpy(), frame["vec"].to_numpy()
        for target, when in zip(group["item"].to_numpy(), group["seconds"].to_numpy()):
            end = np.searchsorted(secs, when, side="right")
            start = max(0, end - context - 8)
            window = np.arange(start, end)
            window = window[items[window] != target][-context:][::-1]
            if len(window):
                m = len(window)
                out.vec[row, :m] = vecs[window]
                out.kind[row, :m] = kinds[window]
                out.age[row, :m] = age_buckets(secs[window], secs[window].max())
                out.item[row, :m] = items[window]
                out.seconds[row, :m] = secs[window]
                out.mask[row, :m] = True
                keep[row] = True
            row += 1
    return out.take(np.flatnonzero(keep))


def newest_first(entries: pd.DataFrame) -> pd.DataFrame:
    """Entries sorted by user, then newest first in the pipeline's order (``history.entry_order``:
    time, kind, item with searches last, the item's own vector before a text about it)."""
    key = entries.assign(
        _neg=-entries["seconds"], _no_item=entries[C.COL_ITEM_ID].isna(), _item_s=entries[C.COL_ITEM_ID].fillna(""),
        _text=entries["has_text"] if "has_text" in entries.columns else False,
    )
    order = key.sort_values([C.COL_USER_ID, "_neg", "kind", "_no_item", "_item_s", "_text"], kind="stable").index
    return entries.loc[order]


def seen_matrix(data: HistoryData, users: np.ndarray) -> sp.csr_matrix:
    """(users x catalog) binary: the catalog items each user had any entry about."""
    row_of_item = pd.Series(np.arange(len(data.item_ids)), index=pd.Index(data.item_ids))
    row_of_user = pd.Series(np.arange(len(users)), index=pd.Index(users))
    rows = data.entries[data.entries[C.COL_USER_ID].isin(row_of_user.index) & data.entries[C.COL_ITEM_ID].isin(row_of_item.index)]
    matrix = sp.csr_matrix(
        (np.ones(len(rows)), (row_of_user[rows[C.COL_USER_ID]].to_numpy(), row_of_item[rows[C.COL_ITEM_ID]].to_numpy())),
        shape=(len(users), len(data.item_ids)),
    )
    matrix.data[:] = 1.0
    return matrix


def item_statistics(first: pd.DataFrame, n_items: int, neighbors: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(log(1 + count), neighbour rows, neighbour cosine similarities) from interactions.

    The similarity is item-kNN's: binary co-occurrence over the square roots of the
    two items' counts; each item keeps its ``neighbors`` most similar items.
    """
    users = pd.Index(first[C.COL_USER_ID].unique())
    matrix = sp.csr_matrix(
        (np.ones(len(first), np.float32), (users.get_indexer(first[C.COL_USER_ID]), first["item"].to_numpy())),
        shape=(len(users), n_items),
    )
    counts = np.asarray(matrix.sum(axis=0)).ravel()
    inv = np.where(counts > 0, 1.0 / np.sqrt(np.maximum(counts, 1)), 0.0).astype(np.float32)
    co = (matrix.T @ matrix).tocsr()
    co.setdiag(0)
    co.eliminate_zeros()
    m = max(1, min(neighbors, n_items - 1))
    idx = np.full((n_items, m), -1, np.int64)
    sim = np.zeros((n_items, m), np.float32)
    for i in range(n_items):
        cols, vals = co.indices[co.indptr[i]:co.indptr[i + 1]], co.data[co.indptr[i]:co.indptr[i + 1]]
        if len(cols) == 0:
            continue
        vals = vals * inv[i] * inv[cols]
        top = np.argsort(-vals, kind="stable")[:m]
        idx[i, :len(top)], sim[i, :len(top)] = cols[top], vals[top]
    return np.log1p(counts).astype(np.float32), idx, sim


def knn_scores(examples: Examples, idx: np.ndarray, sim: np.ndarray, decay: float, n_items: int) -> np.ndarray:
    """Σ_r decay^r sim(item_r, ·) over each context's distinct items, newest first: (examples x items)."""
    out = np.zeros((len(examples), n_items), np.float32)
    for row in range(len(examples)):
        seen: list[int] = []
        for item in examples.item[row][examples.mask[row]].tolist():
            if item >= 0 and item not in seen:
                seen.append(item)
        for rank, item in enumerate(seen):
            valid = idx[item] >= 0
            np.add.at(out[row], idx[item][valid], decay**rank * sim[item][valid])
    return out


def ndcg_at_k(scores: np.ndarray, exclude: sp.csr_matrix, target: np.ndarray, k: int) -> tuple[float, float]:
    """Mean NDCG@k and Recall@k of one relevant item per row, excluded items never ranked."""
    scores = np.array(scores, dtype=np.float64, copy=True)
    rows, cols = exclude.nonzero()
    scores[rows, cols] = -np.inf
    target_score = scores[np.arange(len(target)), target]
    # Rank = items strictly better, plus ties with a lower index (the harness's stable order).
    better = (scores > target_score[:, None]).sum(axis=1)
    ties = np.array([(scores[r, :target[r]] == target_score[r]).sum() for r in range(len(target))])
    rank = better + ties
    hit = (rank < k) & np.isfinite(target_score)
    return float(np.where(hit, 1.0 / np.log2(rank + 2), 0.0).mean()), float(hit.mean())


def zero_shot_scores(data: HistoryData, examples: Examples, params) -> np.ndarray:
    """The untrained pipeline's scores (``models.interest``: decayed mean + attention pooling, cosine).

    Only the context entries are used (the long-term vector over them too): the
    comparison point of the learned model on the same validation users.
    """
    from interestlake.models.interest import user_interest

    items = data.vectors[data.item_vec]
    users = np.zeros((len(examples), data.vectors.shape[1]), np.float32)
    for row in range(len(examples)):
        m = examples.mask[row]
        vecs = data.vectors[examples.vec[row][m]][::-1]
        kinds = [KINDS[i] for i in examples.kind[row][m]][::-1]
        users[row] = user_interest(vecs, kinds, examples.seconds[row][m][::-1], params).interest
    return users @ items.T


def train(
    data: HistoryData, context: int, params: TrainParams = TrainParams(), device: str = "cpu", zero_shot=None
) -> TrainResult:
    """Fits the network and the blend on ``data`` (steps 1-4 of the module docstring).

    Args:
        data: Users' embedded history and the catalog.
        context: N, the entries per user the model reads (``interests.short_term_events``).
        params: Hyper-parameters.
        device: torch device (``cuda`` when the driver has a GPU).
        zero_shot: ``InterestParams`` of the untrained pooling; when given, its NDCG@k
            on the same validation users is reported (``validation_zero_shot_ndcg``).

    Returns:
        The exported model and the validation metrics (``validation_ndcg`` is the
        blended model's NDCG@k, the promotion criterion).

    Raises:
        NotEnoughData: Too little data (no user with two interactions).
    """
    started, cpu_started = time.perf_counter(), time.process_time()
    # The network reads the frozen vectors through a fixed basis of their top singular
    # directions (input_dim of d): the learned projections then cost input_dim x dim, and
    # the exported matrices are basis @ W, so inference reads the full vectors.
    original = data
    basis = _basis(data.vectors, params.input_dim)
    data = dataclasses.replace(data, vectors=(data.vectors @ basis).astype(np.float32))
    fit_data, held = validation_split(data)
    if held.empty:
        raise NotEnoughData("training needs users with at least two item interactions; none has")
    train_ex = build_examples(fit_data, context, max_per_user=params.max_examples_per_user)
    val_ex = build_examples(fit_data, context, targets=held)
    if len(train_ex) == 0 or len(val_ex) == 0:
        raise NotEnoughData("training found no example with history before it")
    exclude = seen_matrix(fit_data, val_ex.user)
    net, best_epoch, content_ndcg = _fit_network(data, train_ex, val_ex, exclude, params, device, params.epochs)
    content = _content_scores(net, data, val_ex, device)

    pop, idx, sim = item_statistics(interactions(fit_data), len(data.item_ids), params.neighbors)
    blend, best = _fit_blend(content, val_ex, exclude, pop, idx, sim, params.k, len(data.item_ids))
    log.info("train: validation NDCG@%d content %.4f, blended %.4f (%s)", params.k, content_ndcg, best[0], blend)

    untrained = None
    if zero_shot is not None:
        raw = dataclasses.replace(fit_data, vectors=original.vectors)
        untrained = ndcg_at_k(zero_shot_scores(raw, val_ex, zero_shot), exclude, val_ex.target, params.k)[0]

    all_ex = build_examples(data, context, max_per_user=params.max_examples_per_user)
    net, _, _ = _fit_network(data, all_ex, None, None, params, device, best_epoch)
    pop, idx, sim = item_statistics(interactions(data), len(data.item_ids), params.neighbors)
    arrays = _export(net, basis, pop, idx, sim)
    meta = {
        "context": context, **blend,
        "cold_bias": float(np.median(arrays["item_bias"])) if len(arrays["item_bias"]) else 0.0,
        "trained_epochs": best_epoch,
    }
    metrics = {
        "validation_ndcg": best[0], "validation_recall": best[1], "validation_content_ndcg": content_ndcg,
        **({"validation_zero_shot_ndcg": untrained} if untrained is not None else {}),
        "validation_users": float(len(val_ex)), "train_examples": float(len(all_ex)),
        "train_seconds": round(time.perf_counter() - started, 1),
        # CPU seconds of all this process's threads: what the fit costs whatever else runs.
        "train_cpu_seconds": round(time.process_time() - cpu_started, 1),
    }
    return TrainResult(InterestModel(data.item_ids, arrays, meta), metrics, {**params.__dict__, "context": context})


def _fit_blend(content, val_ex, exclude, pop, idx, sim, k, n_items) -> tuple[dict[str, float], tuple[float, float]]:
    """Grid search of (knn_weight, knn_decay, pop_weight) on validation NDCG@k (ties: the simpler point)."""
    best_point, best = {"knn_weight": 0.0, "knn_decay": 1.0, "pop_weight": 0.0}, (-1.0, 0.0)
    for decay in KNN_DECAYS:
        knn = knn_scores(val_ex, idx, sim, decay, n_items)
        for weight in KNN_WEIGHTS:
            for pop_weight in POP_WEIGHTS:
                if weight == 0 and decay != KNN_DECAYS[-1]:
                    continue
                score = ndcg_at_k(content + weight * knn + pop_weight * pop[None, :], exclude, val_ex.target, k)
                if score[0] > best[0] + 1e-9:
                    best_point, best = {"knn_weight": weight, "knn_decay": decay, "pop_weight": pop_weight}, score
    return best_point, best


RESULT_FILE = "result.pickle"


def distributed_train(folder: str, context: int, params: dict[str, Any], zero_shot: dict[str, Any] | None):
    """``train`` in one process of ``TorchDistributor``; rank 0 writes the result to ``folder/result.pickle``.

    (Written to the folder rather than returned: in local mode every process's return
    value goes to the same file, and the last one to finish wins.)

    Args:
        folder: Where ``HistoryData.save`` wrote the prepared history (and where the result goes).
        context: N.
        params: ``TrainParams`` fields.
        zero_shot: ``InterestParams`` fields of the untrained pooling, or None.
    """
    import os

    import torch
    import torch.distributed as dist

    from interestlake.models.interest import InterestParams

    cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if cuda else "cpu"
        result = train(HistoryData.load(folder), context, TrainParams(**params), device,
                       InterestParams(**zero_shot) if zero_shot else None)
        if dist.get_rank() == 0:
            import pickle

            import pyarrow.fs as pafs

            fs, base = pafs.FileSystem.from_uri(folder)
            with fs.open_output_stream(f"{base}/{RESULT_FILE}") as out:
                pickle.dump(result, out)
    finally:
        dist.destroy_process_group()


# ---- torch --------------------------------------------------------------------------


def _network(d: int, h: int, n_items: int, context: int, dropout: float):
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            # Orthonormal columns (rows when d < h): the untrained dot products follow the encoder's.
            if d >= h:
                basis = torch.linalg.qr(torch.randn(d, h))[0] * 3.0
            else:
                basis = torch.linalg.qr(torch.randn(h, d))[0].T * 3.0
            self.w_hist = nn.Parameter(basis.clone())
            self.w_item = nn.Parameter(basis.clone())
            self.attention = nn.Parameter(torch.eye(h))
            self.kind_emb = nn.Parameter(torch.zeros(len(KINDS), h))
            self.kind_bias = nn.Parameter(torch.zeros(len(KINDS)))
            self.pos_bias = nn.Parameter(torch.zeros(context))
            self.age_bias = nn.Parameter(torch.zeros(AGE_BUCKETS))
            # Row n_items is the "no known item" row and stays zero.
            self.item_in = nn.Embedding(n_items + 1, h, padding_idx=n_items)
            nn.init.zeros_(self.item_in.weight)
            self.item_out = nn.Parameter(torch.zeros(n_items, h))
            self.item_bias = nn.Parameter(torch.zeros(n_items))
            self.drop = nn.Dropout(dropout)
            self.n_items = n_items

        def users(self, vectors, vec, kind, age, item, mask):
            item = torch.where(item >= 0, item, torch.full_like(item, self.n_items))
            # Project each distinct vector of the batch once (popular items recur a lot).
            distinct, inverse = torch.unique(vec, return_inverse=True)
            x = (vectors[distinct] @ self.w_hist)[inverse] + self.kind_emb[kind] + self.item_in(item)
            x = self.drop(x)
            m = mask.float().unsqueeze(-1)
            query = (x * m).sum(1) / m.sum(1).clamp(min=1.0)
            logits = torch.einsum("bnh,hk,bk->bn", x, self.attention, query) / (x.shape[-1] ** 0.5)
            positions = torch.arange(x.shape[1], device=x.device)
            logits = logits + self.kind_bias[kind] + self.pos_bias[positions][None, :] + self.age_bias[age]
            logits = logits.masked_fill(~mask, float("-inf"))
            weights = torch.softmax(logits, dim=1)
            return torch.einsum("bn,bnh->bh", weights, x)

        def items(self, vectors, item_vec):
            return vectors[item_vec] @ self.w_item + self.item_out, self.item_bias

        def forward(self, vectors, vec, kind, age, item, mask, item_vec_rows, item_rows):
            """Logits of the contexts over the items ``item_rows`` (DDP syncs gradients through forward)."""
            users = self.users(vectors, vec, kind, age, item, mask)
            return users @ (vectors[item_vec_rows] @ self.w_item + self.item_out[item_rows]).T + self.item_bias[item_rows]

    return Net()


def _tensors(examples: Examples, device):
    import torch

    return [torch.as_tensor(getattr(examples, name), device=device) for name in ("vec", "kind", "age", "item", "mask", "target")]


def _fit_network(data, train_ex, val_ex, exclude, params: TrainParams, device: str, epochs: int):
    """Trains for up to ``epochs``; with validation examples, early-stops and restores the best epoch.

    Returns:
        (network, epochs used (the best epoch with validation), best validation content NDCG).
    """
    import torch
    import torch.distributed as dist

    torch.manual_seed(params.seed)
    rng = np.random.default_rng(params.seed)
    n_items = len(data.item_ids)
    vectors = torch.as_tensor(data.vectors, dtype=torch.float32, device=device)
    item_vec = torch.as_tensor(data.item_vec, dtype=torch.int64, device=device)
    all_items = torch.arange(n_items, device=device)
    net = _network(data.vectors.shape[1], params.dim, n_items, train_ex.vec.shape[1], params.dropout).to(device)
    # Under TorchDistributor each process trains on its share of every epoch's examples
    # and DistributedDataParallel averages the gradients; the seeds make every process
    # start from the same weights and draw the same order.
    distributed = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    model = torch.nn.parallel.DistributedDataParallel(net) if distributed else net
    optimizer = torch.optim.Adam(net.parameters(), lr=params.learning_rate, weight_decay=params.weight_decay)
    tensors = _tensors(train_ex, device)
    sampled = n_items > params.max_softmax_items
    per_rank = len(train_ex) // world
    batch_size = max(1, params.batch_size // world)
    best_state, best_epoch, best_ndcg, stale = None, epochs, -1.0, 0
    for epoch in range(1, epochs + 1):
        net.train()
        order = torch.as_tensor(rng.permutation(len(train_ex))[rank * per_rank:(rank + 1) * per_rank], device=device)
        total = 0.0
        for start in range(0, per_rank, batch_size):
            batch = order[start:start + batch_size]
            vec, kind, age, item, mask, target = (t[batch] for t in tensors)
            if sampled:
                negatives = torch.randint(0, n_items, (params.sampled_negatives,), device=device)
                rows = torch.unique(torch.cat([target, negatives]))
                labels = torch.searchsorted(rows, target)
            else:
                rows, labels = all_items, target
            loss = torch.nn.functional.cross_entropy(model(vectors, vec, kind, age, item, mask, item_vec[rows], rows), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(batch)
        if val_ex is None:
            continue
        content = _content_scores(net, data, val_ex, device)
        ndcg, _ = ndcg_at_k(content, exclude, val_ex.target, params.k)
        log.info("train: epoch %d loss %.4f validation NDCG@%d %.4f", epoch, total / max(per_rank, 1), params.k, ndcg)
        if ndcg > best_ndcg + 1e-6:
            best_ndcg, best_epoch, stale = ndcg, epoch, 0
            best_state = {name: value.detach().clone() for name, value in net.state_dict().items()}
        else:
            stale += 1
            if stale >= params.patience:
                break
    if best_state is not None:
        net.load_state_dict(best_state)
    return net, best_epoch, best_ndcg


def _content_scores(net, data: HistoryData, examples: Examples, device: str) -> np.ndarray:
    import torch

    net.eval()
    vectors = torch.as_tensor(data.vectors, dtype=torch.float32, device=device)
    item_vec = torch.as_tensor(data.item_vec, dtype=torch.int64, device=device)
    with torch.no_grad():
        vec, kind, age, item, mask, _ = _tensors(examples, device)
        users = net.users(vectors, vec, kind, age, item, mask)
        item_vectors, bias = net.items(vectors, item_vec)
        return (users @ item_vectors.T + bias).cpu().numpy()


def _basis(vectors: np.ndarray, size: int) -> np.ndarray:
    """(d, min(size, d)) orthonormal basis of the vectors' top right singular directions (identity when size >= d)."""
    d = vectors.shape[1]
    if size >= d:
        return np.eye(d, dtype=np.float32)
    _, _, vt = np.linalg.svd(np.asarray(vectors, dtype=np.float64), full_matrices=False)
    return vt[:size].T.astype(np.float32)


def _export(net, basis, pop, idx, sim) -> dict[str, np.ndarray]:
    """The network's parameters as the numpy arrays ``InterestModel`` applies."""
    def array(tensor) -> np.ndarray:
        return tensor.detach().cpu().numpy().astype(np.float32)

    return {
        "w_hist": basis @ array(net.w_hist), "w_item": basis @ array(net.w_item), "attention": array(net.attention),
        "kind_emb": array(net.kind_emb), "kind_bias": array(net.kind_bias), "pos_bias": array(net.pos_bias),
        "age_bias": array(net.age_bias), "item_in": array(net.item_in.weight[:-1]), "item_out": array(net.item_out),
        "item_bias": array(net.item_bias), "item_pop": pop, "neighbor_idx": idx.astype(np.int32),
        "neighbor_sim": sim,
    }
