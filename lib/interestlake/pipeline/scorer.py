"""The recommend stage's one scoring path, as it runs on executors (or on the driver for a small batch).

retrieval -> re-ranker -> reason writer, whatever scores the items:

- **retrieval** scans the staged item matrix once per block of users, block of items by
  block of items (or asks the approximate index, for large catalogs without a learned
  model). Every user contributes query rows: one per interest (the interest vector, or
  one per interest cluster) and one per fresh need. An interest row scores items with
  the user's relevance function: cosine to the interest without a learned model, the
  model's ``[u, 1] . [v_j, b_j]`` plus its item-kNN term under one. A need row scores by
  cosine to the query's vector, its price bounds and negations applied in the scan. The
  user's excluded items never score. ``TopKPool`` keeps the best of each row: K for the
  users nothing re-ranks, ``steer.pool_factor`` x K for the others (a block holding both is
  scanned as two sub-blocks, ``_pools``);
- the **re-ranker** (``interestlake.models.steering``) orders the union of a user's pools:
  needs' slots, interests' shares, dislikes, MMR. A user with one interest, no need, no
  dislike and MMR off takes their row's pool as it is: the exact top K of the relevance;
- the **reason writer** (``interestlake.models.reasons.ReasonWriter``) names each pick's
  evidence.

The item matrix (``stage`` in ``interestlake.pipeline.recommend``) is read once per Python
worker and kept while its vectors fit in ``recommend.item_cache_mb``; a larger one is
streamed from storage per user block. Memory follows the block sizes and that cap;
nothing users x items is shuffled or collected.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from itertools import chain, repeat

import numpy as np
import pyarrow as pa
from pyspark.sql import types as T

from interestlake import constants as C
from interestlake.lake.schemas import arrow_schema
from interestlake.lake.uris import readable_uri
from interestlake.models.reasons import ReasonWriter
from interestlake.models.scoring import ApproximateTopK, KnnBonus, TopKPool, block_scores, scoring_device
from interestlake.models.steering import UserQueries
from interestlake.pipeline.frames import Rows, map_in_arrow
from interestlake.settings import Settings

RANKED_SCHEMA = T.StructType(
    [
        T.StructField(C.COL_USER_ID, T.StringType(), False),
        T.StructField(C.COL_RANK, T.IntegerType(), False),
        T.StructField(C.COL_ITEM_ID, T.StringType(), False),
        T.StructField(C.COL_SCORE, T.DoubleType(), False),
        T.StructField(C.COL_REASON, T.StringType(), False),
    ]
)
_RANKED_ARROW_SCHEMA = arrow_schema(RANKED_SCHEMA)
# The staged item matrix: every recommendable item with its encoder vector, the facts needs
# and reasons check (price, lower-cased text) and, under a learned model, its [v_j, b_j].
SCORE_VECTOR = "score_vector"
ITEM_MATRIX_SCHEMA = T.StructType(
    [
        T.StructField(C.COL_ITEM_ID, T.StringType(), False),
        T.StructField(C.COL_EMBEDDING, T.ArrayType(T.FloatType()), False),
        T.StructField(C.COL_PRICE, T.DoubleType(), True),
        T.StructField(C.COL_TEXT, T.StringType(), True),
        T.StructField(SCORE_VECTOR, T.ArrayType(T.FloatType()), True),
    ]
)
ITEM_MATRIX_ARROW_SCHEMA = arrow_schema(ITEM_MATRIX_SCHEMA)


def score_users(user_side: Rows, items_uri: str, settings: Settings, model=None, approximate: bool = False) -> Rows:
    """Top-K rows (user_id, rank, item_id, score, reason) of every user of ``user_side``.

    Args:
        user_side: ``interestlake.pipeline.evidence.user_side`` rows: a DataFrame, or for a
            small batch an Arrow table, scored here on the driver.
        items_uri: The staged item matrix (``ITEM_MATRIX_SCHEMA``).
        settings: ``recommend`` (K, block sizes, cache, device), ``steer`` and the
            interests' event weights.
        model: Broadcast ``InterestModel`` in use (users' ``interest`` is its user vector and
            the matrix has its ``score_vector``s), or None.
        approximate: Retrieve with the FAISS index instead of the exact scan (no model).
    """
    return map_in_arrow(user_side, _score_partition(items_uri, settings, model, approximate), RANKED_SCHEMA)


def _score_partition(items_uri: str, settings: Settings, model, approximate: bool):
    """Builds the executor function of ``score_users`` (kept free of Spark objects)."""
    recommend, steer = settings.recommend, settings.steer
    weights = dict(settings.interests.event_weights)

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        device = scoring_device(recommend.device)
        learned = model.value if model is not None else None
        matrix = held_matrix(items_uri, recommend.item_block_size, recommend.item_cache_mb, learned)
        index = matrix.index() if approximate else None
        for batch in batches:
            for start in range(0, batch.num_rows, recommend.user_block_size):
                users = batch.slice(start, recommend.user_block_size)
                with _cyclic_gc_paused():
                    rows, history, entry_rows, lengths = _user_rows(users, matrix, steer, learned)
                    queries = [UserQueries(row, steer, weights, learned) for row in rows]
                    pools, candidates, knn_terms = _pools(queries, matrix, learned, recommend.k,
                                                          recommend.k * steer.pool_factor, device, index)
                    writer = ReasonWriter(history, lengths, [q.kinds for q in queries], [q.labels for q in queries],
                                          [q.items for q in queries], [q.ratings for q in queries],
                                          [q.topics for q in queries], _flat_history(users, int(lengths.sum())),
                                          entry_rows, steer.negative.max_rating, recommend.reason_min_similarity)
                    ranked = _ranked(queries, pools, candidates, knn_terms, writer, matrix, recommend.k)
                yield ranked

    return run


@contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """Pauses Python's cycle collector for one user block (reference counting still frees).

    A block makes tens of thousands of short-lived dicts, lists and tuples, and every 700 of
    them start a collection that walks the young objects: about 7% of a block's time
    (``bench score``'s users scored in one process: 154-158 against 166-173 us a user; in
    Spark the Python workers' CPU time falls by about 4%). Reference counting frees all
    the block's acyclic garbage at once; what only the cycle collector can free waits
    until the block ends, so at most one block's worth, and is collected after it as usual.
    """
    if not gc.isenabled():  # paused by the caller (or an outer block): leave it so
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


# Per Python worker: the item matrix of the last items_uri, so a worker reads it once for all
# its tasks and user blocks: Spark's reuse of Python workers makes this the executor-wide
# broadcast of the matrix.
_MATRIX_CACHE: dict[tuple, ItemMatrix] = {}


def held_matrix(items_uri: str, block_size: int, cache_mb: int, model=None) -> ItemMatrix:
    """The ``ItemMatrix`` of ``items_uri`` this worker holds, read on first use."""
    key = (items_uri, block_size, cache_mb, model is not None)
    if key not in _MATRIX_CACHE:
        _MATRIX_CACHE.clear()
        _MATRIX_CACHE[key] = ItemMatrix(items_uri, block_size, cache_mb, model)
    return _MATRIX_CACHE[key]


class ItemMatrix:
    """The staged item matrix as one Python worker holds it.

    Ids, prices and texts are always held (needs and reasons read them); the vectors are
    held while they fit in ``cache_mb``, else streamed from storage block by block.
    A row's key is its position in the matrix; ``ranks`` orders the keys by item id, which
    breaks every tie.

    Args:
        uri: Parquet files of ``ITEM_MATRIX_SCHEMA``.
        block_size: Items per block of the scan.
        cache_mb: Most MiB of vectors held.
        model: The learned model in use (its ``score_vector`` column is read), or None.
    """

    def __init__(self, uri: str, block_size: int, cache_mb: int, model=None):
        import pyarrow.dataset as ds

        self.dataset = ds.dataset(readable_uri(uri), format="parquet")
        self.block_size = block_size
        self.vector_columns = [C.COL_EMBEDDING] + ([SCORE_VECTOR] if model is not None else [])
        ids, prices, texts, embeddings, scores, size = [], [], [], [], [], 0
        self.dim = 0
        for batch in self._batches([C.COL_ITEM_ID, C.COL_PRICE, C.COL_TEXT, *self.vector_columns]):
            self.dim = self.dim or len(batch.column(C.COL_EMBEDDING)[0])
            ids += batch.column(C.COL_ITEM_ID).to_pylist()
            prices.append(batch.column(C.COL_PRICE).to_numpy(zero_copy_only=False))
            texts += [text or "" for text in batch.column(C.COL_TEXT).to_pylist()]
            if embeddings is not None:
                embeddings.append(_matrix(batch.column(C.COL_EMBEDDING)))
                scores.append(_matrix(batch.column(SCORE_VECTOR)) if model is not None else None)
                size += embeddings[-1].nbytes + (scores[-1].nbytes if model is not None else 0)
                if size > cache_mb * 2**20:
                    embeddings = scores = None  # streamed from storage instead
        # Ids and texts as object arrays: one gather picks many items' ids or texts.
        self.ids = np.array(ids, dtype=object)
        self.position = {item: row for row, item in enumerate(ids)}
        self.id_array = pa.array(ids, pa.string())
        self.ranks = np.argsort(np.argsort(self.ids, kind="stable"), kind="stable").astype(np.int64)
        self.prices = np.concatenate(prices).astype(np.float64) if prices else np.zeros(0)
        self.texts = np.array(texts, dtype=object)
        # Each model catalog row's key here (-1: not in the matrix), for the kNN term; one more
        # entry, -1, at the end, so that row -1 (no neighbour) maps to key -1 without a test.
        self.model_keys = None
        if model is not None:
            rows = model.rows(ids)
            self.model_keys = np.full(len(model.item_ids) + 1, -1, dtype=np.int64)
            self.model_keys[rows[rows >= 0]] = np.flatnonzero(rows >= 0)
        self.embeddings = _stack(embeddings)
        self.scores = _stack(scores) if model is not None else None
        self._index = None
        self._neighbors = None  # the model's neighbours as this matrix's keys, with their similarities, on first use

    def __len__(self) -> int:
        return len(self.ids)

    def _batches(self, columns: list[str]) -> Iterator[pa.RecordBatch]:
        # One thread: every pass must see the rows in the same order, as keys are positions.
        for batch in self.dataset.to_batches(columns=columns, batch_size=self.block_size, use_threads=False):
            if batch.num_rows:
                yield batch

    def blocks(self) -> Iterator[tuple[int, np.ndarray, np.ndarray | None]]:
        """(first key, encoder vectors, model score vectors or None) of each block of the matrix."""
        if self.embeddings is not None:
            for start in range(0, len(self), self.block_size):
                stop = start + self.block_size
                yield start, self.embeddings[start:stop], None if self.scores is None else self.scores[start:stop]
            return
        start = 0
        for batch in self._batches(self.vector_columns):
            scores = _matrix(batch.column(SCORE_VECTOR)) if SCORE_VECTOR in self.vector_columns else None
            yield start, _matrix(batch.column(C.COL_EMBEDDING)), scores
            start += batch.num_rows

    def fetch(self, keys: np.ndarray, with_scores: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """(encoder vectors, score vectors or None) of the rows ``keys`` (one pass over storage when streamed).

        ``with_scores=False``: the encoder vectors only (None for the score vectors).
        """
        keys = np.asarray(keys, dtype=np.int64)
        if self.embeddings is not None:
            return self.embeddings[keys], None if self.scores is None or not with_scores else self.scores[keys]
        wanted = np.unique(keys)
        found, found_scores = {}, {}
        for start, embeddings, scores in self.blocks():
            here = wanted[(wanted >= start) & (wanted < start + len(embeddings))]
            for key in here.tolist():
                found[key] = embeddings[key - start]
                if scores is not None and with_scores:
                    found_scores[key] = scores[key - start]
        width = len(next(iter(found.values()))) if found else 0
        out = np.stack([found[key] for key in keys.tolist()]) if len(keys) else np.zeros((0, width), np.float32)
        out_scores = np.stack([found_scores[key] for key in keys.tolist()]) if found_scores and len(keys) else None
        return out, out_scores

    def keys(self, item_ids: Sequence[str | None] | pa.Array) -> np.ndarray:
        """Key of each item, -1 when it is not in the matrix (or None); an Arrow array is looked up in Arrow."""
        if isinstance(item_ids, pa.Array):
            import pyarrow.compute as pc

            found = pc.index_in(item_ids.cast(pa.string()), value_set=self.id_array)
            return pc.fill_null(found, -1).to_numpy(zero_copy_only=False).astype(np.int64)
        return np.fromiter(map(self.position.get, item_ids, repeat(-1)), dtype=np.int64, count=len(item_ids))

    def knn_bonus(self, model, recent_per_row: Sequence[Sequence[str | None]]) -> KnnBonus:
        """The learned model's kNN term of query rows with these recent items, over this matrix's keys."""
        if self._neighbors is None:
            self._neighbors = KnnBonus.neighbours(*model.neighbor_columns(self.model_keys[:-1]))
        return KnnBonus(model.knn_seeds(recent_per_row), *self._neighbors, len(self))

    def index(self) -> ApproximateTopK:
        """The FAISS index of the encoder vectors, built once per worker: building costs far more than a search."""
        if self._index is None:
            vectors = self.embeddings if self.embeddings is not None else np.concatenate([e for _, e, _ in self.blocks()])
            self._index = ApproximateTopK(vectors)
        return self._index


def _stack(blocks: list | None) -> np.ndarray | None:
    if blocks is None:
        return None
    return np.concatenate(blocks) if blocks else np.zeros((0, 0), np.float32)


def _matrix(vectors: pa.Array) -> np.ndarray:
    """(n, d) float32 matrix of a list<float> array whose entries all have length d."""
    if len(vectors) == 0:
        return np.zeros((0, 0), np.float32)
    return vectors.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(vectors), -1)


# Vector columns of the user side: read as numpy, because turning (m, 384) float lists into
# Python floats and back cost more than the scoring itself.
_VECTOR_COLUMNS = ("interest", "disliked_vec", "need_vec")


def _user_rows(
    users: pa.RecordBatch, matrix: ItemMatrix, steer, model
) -> tuple[list[dict], np.ndarray, np.ndarray | None, np.ndarray]:
    """The block's users as dicts; vector columns as float32 arrays ((d,) or (m, d), None when null).

    Also returns the reason writer's input: every user's recent-entry vectors as ``_history_vectors``
    gives them (an array and each entry's row of it, or None: entry i is row i) and each user's
    entry count.

    Where the history is clustered into interests (``steer.multi_interest``), ``hist_vec``
    becomes each user's (m, d) recent-entry vectors: shipped ones as they are, listed items'
    from the matrix (``evidence.reason_history`` ships them as ids only); nothing else reads
    them from the row. ``hist_ts`` is read only where the model builds cluster vectors from it.
    """
    clustered = steer.enabled and steer.multi_interest.enabled
    skip = {"hist_vec", "hist_shipped"} | (set() if model is not None and clustered else {"hist_ts"})
    rows = [{} for _ in range(users.num_rows)]
    for name in users.schema.names:
        if name in skip:
            continue
        column = users.column(name)
        values = _vector_values(column) if name in _VECTOR_COLUMNS else column.to_pylist()
        for row, value in zip(rows, values):
            row[name] = value
    history, entry_rows, lengths = _history_vectors(users, matrix)
    if clustered:
        per_entry = history if entry_rows is None else history[entry_rows]
        for row, vectors in zip(rows, np.split(per_entry, np.cumsum(lengths)[:-1]) if len(lengths) else []):
            row["hist_vec"] = vectors
    return rows, history, entry_rows, lengths


def _history_vectors(users: pa.RecordBatch, matrix: ItemMatrix) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Every user's recent entries' float32 vectors, newest first, user after user, and each user's count.

    An entry's vector is the one shipped with it (``hist_vec`` at ``hist_shipped``: a text's
    vector, or an item the matrix lacks), else its item's from the matrix, else zeros. The
    vectors come as (array, each entry's row of it): in the usual block, every entry a listed
    item and the matrix's vectors held, the matrix's own vectors and the entries' keys (no
    copy); otherwise one (n, d) array and None (entry i is row i).
    """
    import pyarrow.compute as pc

    items = users.column("hist_item")
    lengths = pc.fill_null(pc.list_value_length(items), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    starts = np.r_[0, np.cumsum(lengths)][:-1]
    keys = matrix.keys(items.flatten())
    shipped = np.zeros(len(keys), dtype=bool)
    positions = users.column("hist_shipped")
    counts = pc.fill_null(pc.list_value_length(positions), 0).to_numpy(zero_copy_only=False)
    rows = np.repeat(starts, counts) + positions.flatten().to_numpy(zero_copy_only=False).astype(np.int64)
    shipped[rows] = True
    lookup = ~shipped & (keys >= 0)
    if len(lookup) and lookup.all():  # the usual block: every entry a listed item
        if matrix.embeddings is not None:
            return matrix.embeddings, keys, lengths
        return matrix.fetch(keys, with_scores=False)[0], None, lengths
    values = users.column("hist_vec").flatten().flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    width = matrix.dim or (len(values) // max(len(rows), 1))
    history = np.zeros((len(keys), width), np.float32)
    if len(rows):
        history[rows] = values.reshape(len(rows), width)
    if lookup.any():
        history[lookup] = matrix.fetch(keys[lookup], with_scores=False)[0]
    return history, None, lengths


def _flat_history(users: pa.RecordBatch, entries: int) -> tuple[pa.Array, pa.Array, pa.Array] | None:
    """The block's entry kinds, labels and item ids, user after user, as the reason writer takes them.

    None when a list column does not hold the block's ``entries`` entries (the writer then builds them from the rows).
    """
    flat = tuple(users.column(name).flatten().cast(pa.string()) for name in ("hist_kind", "hist_label", "hist_item"))
    return flat if all(len(values) == entries for values in flat) else None


def _vector_values(column: pa.Array) -> list[np.ndarray | None]:
    """Per row of a list<float> or list<list<float>> column: its float32 array, None when null."""
    nested = pa.types.is_list(column.type.value_type)
    flat = column.flatten().flatten() if nested else column.flatten()
    values = flat.to_numpy(zero_copy_only=False).astype(np.float32)
    # Offsets of a sliced array count from its parent's start; flatten() does not.
    outer = column.offsets.to_numpy()
    outer = outer - outer[0]
    inner = column.flatten().offsets.to_numpy() if nested else None
    if nested:
        inner = inner - inner[0]
    null = column.is_null().to_numpy(zero_copy_only=False)
    out: list[np.ndarray | None] = []
    for row in range(len(column)):
        if null[row]:
            out.append(None)
            continue
        first, last = outer[row], outer[row + 1]
        if not nested:
            out.append(values[first:last])
            continue
        start, stop = inner[first], inner[last]
        width = (inner[first + 1] - start) if last > first else 0
        out.append(values[start:stop].reshape(last - first, width) if width else np.zeros((last - first, 0), np.float32))
    return out


def _pools(
    queries: list[UserQueries], matrix: ItemMatrix, model, k: int, depth: int, device: str, index: ApproximateTopK | None
) -> tuple[list[list[tuple[np.ndarray, np.ndarray]]], list[np.ndarray | None], list[list[np.ndarray]] | None]:
    """``_retrieve`` of a block: K per row for users nothing re-ranks, ``depth`` for the others.

    A block of both kinds (a few users with a fresh need among many without) is retrieved
    as two sub-blocks: the plain users' pools then stay K deep, which is what their lists
    take, instead of the re-ranked users' ``pool_factor`` x K.
    """
    groups = [([u for u, query in enumerate(queries) if query.plain == plain], group_depth)
              for plain, group_depth in ((True, k), (False, depth))]
    pools: list = [None] * len(queries)
    candidates: list = [None] * len(queries)
    terms: list | None = [[] for _ in queries] if model is not None else None
    for group, group_depth in groups:
        if not group:
            continue
        found, found_candidates, found_terms = _retrieve([queries[u] for u in group], matrix, model, group_depth,
                                                         device, index)
        for position, u in enumerate(group):
            pools[u], candidates[u] = found[position], found_candidates[position]
            if terms is not None:
                terms[u] = found_terms[position]
    return pools, candidates, terms


def _retrieve(
    queries: list[UserQueries], matrix: ItemMatrix, model, depth: int, device: str, index: ApproximateTopK | None
) -> tuple[list[list[tuple[np.ndarray, np.ndarray]]], list[np.ndarray | None], list[list[np.ndarray]] | None]:
    """Per user, per query row (interests, then needs): the row's pool as (keys, scores), best first.

    Also, per user the re-ranker reads: the keys of every item any of their pools holds,
    once each, in id order (the re-ranker's candidates; None for users it does not
    rank); and under a model, per such user and interest, that interest's kNN term of
    each candidate, else None.
    """
    # Query rows: every user's interests, then every user's needs, so that the rows the model
    # scores and those scored by cosine are two contiguous runs (products written in place).
    owner, learned, vectors, recent, needs = [], [], [], [], []
    for u, query in enumerate(queries):
        for interest in query.interests:
            owner.append(u)
            learned.append(model is not None)
            vectors.append(interest.vector)
            recent.append(interest.recent_items)
            needs.append(None)
    for u, query in enumerate(queries):
        for need in query.needs:
            owner.append(u)
            learned.append(False)
            vectors.append(need.vector)
            recent.append(())
            needs.append(need.need)
    owner, learned = np.array(owner, dtype=np.int64), np.array(learned, dtype=bool)
    pool = TopKPool(len(owner), depth)
    if len(owner):
        by_cosine, by_model = np.flatnonzero(~learned), np.flatnonzero(learned)
        modelled = len(by_model)  # rows [0, modelled) are the model's, the rest cosine's
        cosine_queries = np.stack([vectors[r] for r in by_cosine]).astype(np.float32) if len(by_cosine) else None
        model_queries = np.stack([vectors[r] for r in by_model]).astype(np.float32) if len(by_model) else None
        bonus = matrix.knn_bonus(model, [recent[r] for r in by_model]) if len(by_model) else None
        masks = _Masks(queries, owner, needs, matrix)
        if index is not None:
            # Approximate: a deeper search, then the same masks as the scan.
            found, keys = index.search(cosine_queries, depth * 4 + masks.most_excluded)
            found = np.where(keys >= 0, found, -np.inf).astype(np.float32)
            keys = np.maximum(keys, 0).astype(np.int64)
            masks.apply_rows(found, keys)
            pool.add(keys, matrix.ranks[keys], found)
        else:
            for start, embeddings, score_vectors in matrix.blocks():
                scores = np.empty((len(owner), len(embeddings)), np.float32)
                if modelled:
                    block_scores(model_queries, score_vectors, device, out=scores[:modelled])
                    bonus.add_to(scores[:modelled], start)
                if len(by_cosine):
                    block_scores(cosine_queries, embeddings, device, out=scores[modelled:])
                masks.apply_block(scores, start)
                pool.add(np.arange(start, start + len(embeddings)), matrix.ranks[start:start + len(embeddings)], scores)
    pools = pool.results()
    out: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in queries]
    for row, u in enumerate(owner.tolist()):
        out[u].append(pools[row])
    ranked = [u for u, query in enumerate(queries) if not query.plain]
    candidates: list[np.ndarray | None] = [None] * len(queries)
    for u, keys in zip(ranked, _candidates([out[u] for u in ranked], matrix.ranks)):
        candidates[u] = keys
    if model is None:
        return out, candidates, None
    bonus_row = np.full(len(owner), -1, dtype=np.int64)
    bonus_row[by_model] = np.arange(len(by_model))
    terms: list[list[np.ndarray]] = [[] for _ in queries]
    for row, u in enumerate(owner.tolist()):
        if bonus_row[row] >= 0 and candidates[u] is not None:
            terms[u].append(bonus.at(int(bonus_row[row]), candidates[u]))
    return out, candidates, terms


def _candidates(pools_of_users: list[list[tuple[np.ndarray, np.ndarray]]], ranks: np.ndarray) -> list[np.ndarray]:
    """Per user, the keys of the items their pools hold, once each, in id order (``ranks``: each key's).

    One sort for all the users (by user, then id), not a Python step per user.
    """
    lengths = [sum(len(keys) for keys, _ in pools) for pools in pools_of_users]
    if not sum(lengths):
        return [np.zeros(0, np.int64) for _ in pools_of_users]
    keys = np.concatenate([keys for pools in pools_of_users for keys, _ in pools]).astype(np.int64)
    owner = np.repeat(np.arange(len(pools_of_users)), lengths)
    order = np.lexsort((ranks[keys], owner))
    keys, owner = keys[order], owner[order]
    # Ranks are distinct, so a key's repeats (in several pools of a user) are neighbours now.
    first = np.ones(len(keys), dtype=bool)
    first[1:] = (keys[1:] != keys[:-1]) | (owner[1:] != owner[:-1])
    keys, owner = keys[first], owner[first]
    return np.split(keys, np.cumsum(np.bincount(owner, minlength=len(pools_of_users)))[:-1])


class _Masks:
    """What a query row may never retrieve: the user's excluded items, a need's price bounds and negations."""

    def __init__(self, queries: list[UserQueries], owner: np.ndarray, needs: list, matrix: ItemMatrix):
        self.matrix = matrix
        # Every user's excluded items' keys in one lookup, then each query row gets its user's
        # (arrays, not a Python step per row: a block has thousands of rows).
        names = [list(q.excluded) for q in queries]
        counts = np.array([len(n) for n in names], dtype=np.int64)
        found = matrix.keys(list(chain.from_iterable(names)))
        user = np.repeat(np.arange(len(queries), dtype=np.int64), counts)
        known = found >= 0
        found, per_user = found[known], np.bincount(user[known], minlength=len(queries))
        first = np.r_[0, np.cumsum(per_user)][:-1]
        taken = per_user[owner]  # each query row's count
        rows = np.repeat(np.arange(len(owner), dtype=np.int64), taken)
        offset = np.arange(len(rows)) - np.repeat(np.cumsum(taken) - taken, taken)
        keys = found[np.repeat(first[owner], taken) + offset]
        # By key, then row: each block of the scan finds its own pairs with one binary search.
        order = np.argsort(keys, kind="stable")
        self.rows, self.keys = rows[order], keys[order]
        self.most_excluded = int(counts.max()) if len(counts) else 0
        self.bounded = [r for r, need in enumerate(needs) if need is not None and (
            need.price_min is not None or need.price_max is not None)]
        self.low = np.array([needs[r].price_min if needs[r].price_min is not None else -np.inf for r in self.bounded])
        self.high = np.array([needs[r].price_max if needs[r].price_max is not None else np.inf for r in self.bounded])
        self.negated = [(r, needs[r]) for r, need in enumerate(needs) if need is not None and need.excluded]

    def apply_block(self, scores: np.ndarray, start: int) -> None:
        """Sets the masked (row, item) pairs of one block of the scan (items ``start`` on) to ``-inf``."""
        stop = start + scores.shape[1]
        first, last = np.searchsorted(self.keys, [start, stop])
        scores[self.rows[first:last], self.keys[first:last] - start] = -np.inf
        if self.bounded:
            prices = self.matrix.prices[start:stop]
            outside = np.isnan(prices)[None, :] | (prices[None, :] < self.low[:, None]) | (prices[None, :] > self.high[:, None])
            bounded = np.array(self.bounded)
            scores[bounded] = np.where(outside, -np.inf, scores[bounded])
        for row, need in self.negated:
            texts = self.matrix.texts[start:stop]
            scores[row, [column for column, text in enumerate(texts) if need.excludes(text)]] = -np.inf

    def apply_rows(self, scores: np.ndarray, keys: np.ndarray) -> None:
        """The same masks on per-row results of the approximate index (``keys`` per row)."""
        excluded = set(zip(self.rows.tolist(), self.keys.tolist()))
        for row in range(len(scores)):
            for column, key in enumerate(keys[row].tolist()):
                if (row, key) in excluded:
                    scores[row, column] = -np.inf
        for position, row in enumerate(self.bounded):
            prices = self.matrix.prices[keys[row]]
            outside = np.isnan(prices) | (prices < self.low[position]) | (prices > self.high[position])
            scores[row, outside] = -np.inf
        for row, need in self.negated:
            scores[row, [c for c, key in enumerate(keys[row].tolist()) if need.excludes(self.matrix.texts[key])]] = -np.inf


def _ranked(
    queries: list[UserQueries], pools: list[list[tuple[np.ndarray, np.ndarray]]], candidates: list[np.ndarray | None],
    knn_terms: list[list[np.ndarray]] | None, writer: ReasonWriter, matrix: ItemMatrix, k: int,
) -> pa.RecordBatch:
    """The block's rows (user_id, rank, item_id, score, reason): the re-ranker where it is needed, then reasons.

    ``candidates`` and ``knn_terms``: ``_retrieve``'s, of each re-ranked user (None for the others; ``knn_terms``
    None without a model).
    """
    chosen = [candidates[u] if not q.plain else (pools[u][0][0][:k] if pools[u] else np.zeros(0, np.int64))
              for u, q in enumerate(queries)]
    flat = np.concatenate(chosen) if chosen else np.zeros(0, np.int64)
    wanted, held_row = np.unique(flat, return_inverse=True)
    held_vectors, held_scores = matrix.fetch(wanted)
    starts = np.r_[0, np.cumsum([len(keys) for keys in chosen])].tolist()
    picked, scores, needs = [], [], []
    for u, query in enumerate(queries):
        keys = chosen[u]
        if query.plain:
            picked.append(keys)
            scores.append(pools[u][0][1][:k].astype(np.float64) if pools[u] else np.zeros(0))
            needs.append([None] * len(keys))
            continue
        rows = held_row[starts[u]:starts[u + 1]]
        item_ids = matrix.ids[keys].tolist()  # in id order, as the re-ranker takes them
        picks = query.rank(
            item_ids, held_vectors[rows], None if held_scores is None else held_scores[rows], matrix.prices[keys],
            matrix.texts[keys].tolist(), k, None if knn_terms is None else knn_terms[u],
        )
        position = {item: i for i, item in enumerate(item_ids)}
        picked.append(keys[[position[p.item_id] for p in picks]] if picks else np.zeros(0, np.int64))
        scores.append(np.array([p.score for p in picks], dtype=np.float64))
        needs.append([None if p.need is None else query.needs[p.need].need for p in picks])
    listed = np.concatenate(picked) if picked else np.zeros(0, np.int64)
    lengths = [len(keys) for keys in picked]
    # Every listed item's id, text and price in one gather each, then cut per user.
    bounds = np.r_[0, np.cumsum(lengths)].tolist()
    flat_ids, flat_texts = matrix.ids[listed].tolist(), matrix.texts[listed].tolist()
    flat_prices = matrix.prices[listed].tolist()
    cut = list(zip(bounds[:-1], bounds[1:]))
    reasons = writer.write([flat_ids[a:b] for a, b in cut], held_vectors[np.searchsorted(wanted, listed)],
                           [flat_texts[a:b] for a, b in cut], [flat_prices[a:b] for a, b in cut], needs)
    return pa.RecordBatch.from_pydict({
        C.COL_USER_ID: [q.user_id for q, n in zip(queries, lengths) for _ in range(n)],
        C.COL_RANK: [rank for n in lengths for rank in range(1, n + 1)],
        C.COL_ITEM_ID: flat_ids,
        C.COL_SCORE: np.concatenate(scores) if scores else np.zeros(0),
        C.COL_REASON: [line for lines in reasons for line in lines],
    }, schema=_RANKED_ARROW_SCHEMA)
