"""Recommend stage: users x items -> top-K ``recommendations`` with a reason each.

The recommendable items are written once as a matrix every executor reads;
users are streamed in partitions, and each task scores a block of users against
the item matrix block by block with a running top K (blocked matrix multiply,
float32). Neither the users x items matrix nor the item table is ever collected
to the driver or shuffled.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from interestlake import constants as C
from interestlake.lake.schemas import arrow_schema
from interestlake.lake.tables import LakeTables
from interestlake.models.interest_model import load_model
from interestlake.models.scoring import ApproximateTopK, RunningTopK, reason_for, scoring_device
from interestlake.pipeline import steer
from interestlake.pipeline.frames import Rows, map_in_arrow, with_values
from interestlake.pipeline.history import (
    lists_per_user, resolve_vectors, resolve_vectors_on_driver, stored_refs, stored_refs_on_driver,
)
from interestlake.pipeline.run import DerivedInputs, RunContext, StageReport, derived_inputs, few_new_rows
from interestlake.settings import RecommendSettings, Settings

STAGE = "recommend"
log = logging.getLogger("interestlake")
INPUT_TABLES = (C.USER_INTERESTS, C.ITEM_EMBEDDINGS, C.ITEMS, C.EVENTS, C.REVIEWS, C.TEXT_EMBEDDINGS)
_RANKED_SCHEMA = T.StructType(
    [
        T.StructField(C.COL_USER_ID, T.StringType(), False),
        T.StructField(C.COL_RANK, T.IntegerType(), False),
        T.StructField(C.COL_ITEM_ID, T.StringType(), False),
        T.StructField(C.COL_SCORE, T.DoubleType(), False),
        T.StructField(C.COL_REASON, T.StringType(), False),
    ]
)
_RANKED_ARROW_SCHEMA = arrow_schema(_RANKED_SCHEMA)
_SCORED_ITEMS_SCHEMA = T.StructType(
    [
        T.StructField(C.COL_ITEM_ID, T.StringType(), False),
        T.StructField(C.COL_EMBEDDING, T.ArrayType(T.FloatType()), False),
        T.StructField("score_vector", T.ArrayType(T.FloatType()), False),
    ]
)
_SCORED_ITEMS_ARROW_SCHEMA = arrow_schema(_SCORED_ITEMS_SCHEMA)


def recommend(
    spark: SparkSession, lake: LakeTables, settings: Settings, run: RunContext, full: bool = False
) -> StageReport:
    """Re-scores the users whose interests changed and replaces their lists in one commit.

    Every user is re-scored (and the table rewritten) on the first run, when the
    catalog or item vectors changed (a new or changed item can enter anyone's
    top K), when the parameters changed, or with ``full=True``.

    Returns:
        Counts of users scored and rows written, and the input versions read.
    """
    report = StageReport(STAGE, run.run_id)
    version = settings.encoder.version
    model = load_model(settings)
    # The learned model scores with its own user and item vectors; steering works on the
    # encoder's space, so it applies to the untrained pooling only (README).
    steered = settings.steer.enabled and model is None
    stale = _model_mismatch(lake, settings.model.version if model else None)
    if stale:
        report.note = stale
        log.warning("recommend: %s", stale)
        return report
    params = {"encoder": version, "model": settings.model.version if model else None, **settings.recommend.model_dump(),
              **({"steer": settings.steer.model_dump()} if steered else {})}
    inputs = derived_inputs(lake, report, C.RECOMMENDATIONS, INPUT_TABLES, params)
    if not full and inputs.unchanged:
        report.note = "inputs unchanged since the last commit; nothing to do"
        return report
    now = inputs.tables
    incremental = not full and inputs.same_params and not _catalog_changed(lake, inputs)

    on_driver = incremental and steer.dislike_rule(settings) is None and few_new_rows(
        lake, settings, {t: inputs.since(t) for t in INPUT_TABLES}, now
    )
    users = _changed_users_on_driver(lake, version, inputs) if on_driver else _users(lake, version, inputs, incremental)
    n_users = users.num_rows if on_driver else users.count()
    report.counts["users_scored"] = n_users
    if n_users == 0:
        _release(users)
        report.note = "no user's interests changed"
        return report
    if on_driver:
        user_side = _user_side_on_driver(lake, settings, now, users, steered)
    else:
        scored = users.select(C.COL_USER_ID)
        # The entries behind each user's short-term vector, stored by the interests stage.
        recent = resolve_vectors(lake, version, now, stored_refs(users))
        user_side = (
            users.drop("recent")
            .join(excluded_items(lake, now, scored, settings.recommend.exclude_event_types), C.COL_USER_ID, "left")
            .join(reason_history(recent, lake.read(C.ITEMS, now[C.ITEMS]).select(C.COL_ITEM_ID)), C.COL_USER_ID, "left")
        )
        if steered:  # each user's fresh needs, dislikes, ratings, topics (pipeline/steer.py)
            user_side = user_side.join(steer.user_evidence(lake, settings, now, users), C.COL_USER_ID, "left")
        user_side = user_side.repartition(scoring_tasks(n_users, spark.sparkContext.defaultParallelism))
    shared = spark.sparkContext.broadcast(model) if model is not None else None
    items_uri, n_items, staged = item_matrix(lake, version, now, shared, settings.model.version if model else None)
    report.counts["items"] = n_items
    ann = model is None and settings.recommend.ann_min_items is not None and n_items >= settings.recommend.ann_min_items
    report.counts["approximate"] = int(ann)
    # 1 when this run wrote the item matrix (new catalog, item vectors, encoder or model), 0 when it reused it.
    report.counts["catalog_staged"] = int(staged)
    if steered:  # steered top K (exact scan; pipeline/steer.py)
        meta_uri, _ = lake.kept_scratch(
            "recommend-meta", json.dumps({C.ITEMS: now[C.ITEMS]}), lambda uri: steer.stage_item_meta(lake, now, uri)
        )
        ranked = steer.score_steered(user_side, items_uri, meta_uri, settings)
    else:
        ranked = score_users(user_side, items_uri, settings.recommend, approximate=ann, model=shared)
    rows = with_values(ranked, {C.COL_RUN_ID: run.run_id, "generated_at": run.timestamp})
    metadata = {
        "stage": STAGE, "run_id": run.run_id, "inputs": inputs.fingerprint,
        "mode": "incremental" if incremental else "full",
    }
    if incremental:
        commit = lake.merge(C.RECOMMENDATIONS, rows, on=[C.COL_USER_ID], txn=run.txn(STAGE), metadata=metadata)
    else:
        commit = lake.overwrite(C.RECOMMENDATIONS, rows, txn=run.txn(STAGE), metadata=metadata)
    _release(users)
    report.commits.append(commit)
    return report


def _users(lake: LakeTables, version: str, inputs: DerivedInputs, incremental: bool) -> DataFrame:
    """(user_id, interest, recent) of the users to score: all, or those whose interests changed (persisted)."""
    now = inputs.tables
    of_version = F.col(C.COL_ENCODER_VERSION) == version
    users = (
        lake.read(C.USER_INTERESTS, now[C.USER_INTERESTS]).filter(of_version).select(C.COL_USER_ID, "interest", "recent")
    )
    if incremental:
        changed = (
            lake.changes(C.USER_INTERESTS, inputs.since(C.USER_INTERESTS), now[C.USER_INTERESTS], identity=_CHANGED_BY)
            .filter(of_version)
            .select(C.COL_USER_ID)
        )
        users = users.join(changed, C.COL_USER_ID, "left_semi")
    return users.persist()


# A rewritten user_interests row has a new updated_at; a row a merge only copied keeps its own.
_CHANGED_BY = [C.COL_USER_ID, C.COL_ENCODER_VERSION, C.COL_UPDATED_AT]


def _changed_users_on_driver(lake: LakeTables, version: str, inputs: DerivedInputs) -> pa.Table:
    """``_users`` of an incremental run, read on the driver (a small batch changes few users)."""
    now = inputs.tables
    changed = lake.change_rows(
        C.USER_INTERESTS, inputs.since(C.USER_INTERESTS), now[C.USER_INTERESTS], [C.COL_USER_ID, C.COL_ENCODER_VERSION],
        identity=_CHANGED_BY,
    )
    ids = pc.unique(changed.filter(pc.equal(changed.column(C.COL_ENCODER_VERSION), version)).column(C.COL_USER_ID))
    users = lake.read_arrow(
        C.USER_INTERESTS, [C.COL_USER_ID, "interest", "recent"],
        (ds.field(C.COL_ENCODER_VERSION) == version) & ds.field(C.COL_USER_ID).isin(ids), now[C.USER_INTERESTS],
    )
    return users.take(pc.sort_indices(users, [(C.COL_USER_ID, "ascending")]))


def _user_side_on_driver(lake: LakeTables, settings: Settings, now: dict, users: pa.Table, steered: bool) -> pa.Table:
    """The ``user_side`` of the Spark path for a few users, gathered on the driver.

    Their events and reviews are read once, filtered to them; the excluded items,
    the reason history and (steered) the evidence are the same columns the Spark
    joins give, null where those give null.
    """
    ids = users.column(C.COL_USER_ID).to_pylist()
    of_users = ds.field(C.COL_USER_ID).isin(pa.array(ids, pa.string()))
    events = lake.read_arrow(
        C.EVENTS, [C.COL_USER_ID, C.COL_TS, C.COL_EVENT_TYPE, C.COL_ITEM_ID, C.COL_TEXT, C.COL_RATING], of_users, now[C.EVENTS]
    )
    reviews = lake.read_arrow(C.REVIEWS, [C.COL_USER_ID, C.COL_TS, C.COL_ITEM_ID, C.COL_RATING], of_users, now[C.REVIEWS])
    columns = {C.COL_USER_ID: users.column(C.COL_USER_ID), "interest": users.column("interest")}
    # excluded_items: distinct (user, item) of the excluded event types and of reviews.
    excluded_types = set(settings.recommend.exclude_event_types)
    pairs = sorted({
        (user, item)
        for user, kind, item in zip(*(events.column(n).to_pylist() for n in (C.COL_USER_ID, C.COL_EVENT_TYPE, C.COL_ITEM_ID)))
        if kind in excluded_types and item is not None
    } | {(user, item) for user, item in zip(*(reviews.column(n).to_pylist() for n in (C.COL_USER_ID, C.COL_ITEM_ID)))})
    pairs_table = pa.table({C.COL_USER_ID: pa.array([u for u, _ in pairs], pa.string()),
                            "excluded": pa.array([i for _, i in pairs], pa.string())})
    columns.update(lists_per_user(ids, pairs_table, ["excluded"]))
    # reason_history: resolved recent entries by recency; a listed item's vector is looked up by the scorer.
    recent = resolve_vectors_on_driver(lake, settings.encoder.version, now, stored_refs_on_driver(users))
    recent = recent.take(pc.sort_indices(recent, [("recency", "ascending")]))
    recent_items = pc.unique(pc.drop_null(recent.column(C.COL_ITEM_ID).combine_chunks()))
    listed = lake.read_arrow(C.ITEMS, [C.COL_ITEM_ID], ds.field(C.COL_ITEM_ID).isin(recent_items), now[C.ITEMS])
    shipped = pc.or_(pc.is_valid(recent.column(C.COL_TEXT_HASH)),
                     pc.invert(pc.is_in(recent.column(C.COL_ITEM_ID), value_set=listed.column(C.COL_ITEM_ID).combine_chunks())))
    embedding = recent.column(C.COL_EMBEDDING).combine_chunks()
    recent = recent.set_column(recent.schema.get_field_index(C.COL_EMBEDDING), C.COL_EMBEDDING,
                               pc.if_else(pc.fill_null(shipped, True), embedding, pa.scalar(None, embedding.type)))
    history = lists_per_user(ids, recent, ["kind", C.COL_ITEM_ID, "label", C.COL_EMBEDDING])
    columns.update({"hist_kind": history["kind"], "hist_item": history[C.COL_ITEM_ID], "hist_label": history["label"],
                    "hist_vec": history[C.COL_EMBEDDING]})
    if steered:
        columns.update(steer.user_evidence_on_driver(lake, settings, now, users, events, reviews))
    return pa.table(columns)


def _release(users: DataFrame | pa.Table) -> None:
    if isinstance(users, DataFrame):
        users.unpersist()


def _model_mismatch(lake: LakeTables, applied: str | None) -> str | None:
    """Why the stored user vectors cannot be scored with the interest model this run applies, or None.

    Each Airflow task resolves ``@champion`` when it starts: a promotion between the
    interests task and this one would score vectors of one model against item vectors
    of another. This run then leaves the lists as they are; the next interests run
    recomputes every user with the new model (its parameters changed) and the next
    recommend run scores them.
    """
    last = lake.last_metadata(C.USER_INTERESTS, stage="interests")
    if last is None or "model" not in last or last["model"] == applied:
        return None  # nothing computed yet, or written before models were recorded
    return (
        f"user_interests were computed with interest model {last['model'] or 'none (untrained pooling)'} and this run "
        f"applies {applied or 'none (untrained pooling)'}: recommendations left unchanged until the interests "
        "stage has applied the same model (run interests, or the whole refresh)"
    )


def _catalog_changed(lake: LakeTables, inputs: DerivedInputs) -> bool:
    """True when catalog rows or item vectors changed since the last commit.

    Compaction and vacuum commit new table versions without changing a row;
    they must not make every user be re-scored.
    """
    for table in (C.ITEMS, C.ITEM_EMBEDDINGS):
        since, until = inputs.since(table), inputs.tables[table]
        if since is None or (since != until and not lake.changes(table, since, until).isEmpty()):
            return True
    return False


def item_matrix(
    lake: LakeTables, version: str, versions: dict, model=None, model_version: str | None = None
) -> tuple[str, int, bool]:
    """URI and number of items of the staged item matrix of these input versions, and whether this call staged it.

    Staged by the first run that needs it and kept under ``<lake.root>/_scratch``
    until the catalog, the item vectors, the encoder or the model change: an
    incremental run re-scores a few users against the same items, and staging the
    whole catalog each time would cost more than scoring them. Python workers also
    keep the matrix they read by its URI (``_item_blocks``), so a kept matrix is
    read once per worker, not once per run. A model without a version label is
    staged for each run.
    """
    import uuid

    import pyarrow.dataset as ds

    from interestlake.datasets.landing import readable_uri

    label = model_version if model is None or model_version else f"unlabelled-{uuid.uuid4().hex}"
    key = {"encoder": version, C.ITEMS: versions[C.ITEMS], C.ITEM_EMBEDDINGS: versions[C.ITEM_EMBEDDINGS], "model": label}
    uri, staged = lake.kept_scratch(
        "recommend-items", json.dumps(key, sort_keys=True), lambda uri: stage_item_matrix(lake, version, versions, uri, model)
    )
    return uri, ds.dataset(readable_uri(uri), format="parquet").count_rows(), staged


def stage_item_matrix(lake: LakeTables, version: str, versions: dict, uri: str, model=None) -> None:
    """Writes (item_id, embedding[, score_vector]) of every recommendable item to ``uri``.

    Only items still in the catalog, with a vector of this encoder version. The
    scoring tasks read this matrix block by block, so it is shipped to each
    executor from storage, never collected on the driver. With a learned model
    (a broadcast ``InterestModel``), ``score_vector`` is the model's ``[v_j, b_j]``
    of each item, computed on the executors.
    """
    items = (
        lake.read(C.ITEM_EMBEDDINGS, versions[C.ITEM_EMBEDDINGS])
        .filter(F.col(C.COL_ENCODER_VERSION) == version)
        .join(lake.read(C.ITEMS, versions[C.ITEMS]).select(C.COL_ITEM_ID), C.COL_ITEM_ID, "left_semi")
        .select(C.COL_ITEM_ID, C.COL_EMBEDDING)
    )
    if model is not None:
        items = items.mapInArrow(_with_score_vectors(model), _SCORED_ITEMS_SCHEMA)
    items.write.mode("overwrite").parquet(uri)


def _with_score_vectors(model):
    """Executor function adding the learned model's item vectors to (item_id, embedding) batches."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            vectors = model.value.item_vectors(batch.column(C.COL_ITEM_ID).to_pylist(), _matrix(batch.column(C.COL_EMBEDDING)))
            offsets = pa.array(np.arange(len(vectors) + 1, dtype=np.int32) * vectors.shape[1])
            scored = pa.ListArray.from_arrays(offsets, pa.array(vectors.ravel(), type=pa.float32()))
            yield pa.RecordBatch.from_arrays([batch.column(C.COL_ITEM_ID), batch.column(C.COL_EMBEDDING), scored],
                                             schema=_SCORED_ITEMS_ARROW_SCHEMA)

    return run


def excluded_items(lake: LakeTables, versions: dict, users: DataFrame, event_types: list[str]) -> DataFrame:
    """(user_id, excluded): items the given users must not be offered again (bought, reviewed...)."""
    events = lake.read(C.EVENTS, versions[C.EVENTS]).filter(
        F.col(C.COL_EVENT_TYPE).isin(list(event_types)) & F.col(C.COL_ITEM_ID).isNotNull()
    )
    reviewed = lake.read(C.REVIEWS, versions[C.REVIEWS])
    pairs = events.select(C.COL_USER_ID, C.COL_ITEM_ID).unionByName(reviewed.select(C.COL_USER_ID, C.COL_ITEM_ID))
    return (
        pairs.join(F.broadcast(users), C.COL_USER_ID, "left_semi")
        .groupBy(C.COL_USER_ID)
        .agg(F.collect_set(C.COL_ITEM_ID).alias("excluded"))
    )


def reason_history(recent: DataFrame, listed: DataFrame) -> DataFrame:
    """(user_id, hist_kind, hist_item, hist_label, hist_vec): recent entries as arrays, newest first.

    An entry's vector is shipped only when the scoring workers cannot look it up: a text's
    vector (searches, reviews), or an item no longer in the catalog. An entry of a listed
    item gets a null vector and takes its item's vector from the item matrix each worker
    holds (``history_vectors``): shipping 20 vectors per user through the joins, the
    shuffle and Arrow cost more than scoring them.

    Args:
        recent: The users' resolved recent entries (``resolve_vectors`` of ``stored_refs``).
        listed: item_id of the items in the staged item matrix (the catalog).
    """
    shipped = recent.join(listed.select(C.COL_ITEM_ID, F.lit(True).alias("_listed")), C.COL_ITEM_ID, "left").withColumn(
        C.COL_EMBEDDING,
        F.when(F.col(C.COL_TEXT_HASH).isNull() & F.col("_listed").isNotNull(), F.lit(None)).otherwise(F.col(C.COL_EMBEDDING)),
    )
    # collect_list keeps no order: sort by recency (1 = newest).
    grouped = shipped.groupBy(C.COL_USER_ID).agg(
        F.sort_array(F.collect_list(F.struct("recency", "kind", C.COL_ITEM_ID, "label", C.COL_EMBEDDING))).alias("_hist")
    )
    return grouped.select(
        C.COL_USER_ID,
        F.col("_hist.kind").alias("hist_kind"),
        F.col(f"_hist.{C.COL_ITEM_ID}").alias("hist_item"),
        F.col("_hist.label").alias("hist_label"),
        F.col(f"_hist.{C.COL_EMBEDDING}").alias("hist_vec"),
    )


def score_users(
    user_side: Rows, items_uri: str, settings: RecommendSettings, approximate: bool = False, model=None
) -> Rows:
    """Top-K rows (user_id, rank, item_id, score, reason) of every user of ``user_side``.

    Each task takes its users in blocks of ``user_block_size`` and multiplies
    them by the item matrix at ``items_uri`` in blocks of ``item_block_size``,
    keeping a running top K per user (``RunningTopK``). Each Python worker reads
    the matrix once and keeps it when it fits in ``item_cache_mb``; a larger one
    is streamed from storage per user block. Memory follows the block sizes and
    that cap, not the catalog or the number of users, and no users x items pair
    is shuffled.
    With ``approximate``, each Python worker builds a FAISS index of the item
    matrix once and answers every user block from it (``ApproximateTopK``).

    Args:
        user_side: user_id, interest, excluded (item ids), and the reason history
            (hist_kind, hist_item, hist_label, hist_vec; newest first): a DataFrame, or for
            a small batch an Arrow table, scored here on the driver.
        items_uri: Parquet files of (item_id, embedding).
        settings: ``k``, the block sizes, ``item_cache_mb`` and the device.
        approximate: Use the FAISS index instead of the exact scan.
        model: Broadcast ``InterestModel``: users' ``interest`` is its user vector, items
            are scored by their ``score_vector`` plus its item-kNN term over the user's
            recent items. None: cosine of the stored vectors.
    """
    scorer = _score_partition(
        items_uri, settings.k, settings.user_block_size, settings.item_block_size, settings.device, approximate,
        settings.item_cache_mb, model,
    )
    return map_in_arrow(user_side, scorer, _RANKED_SCHEMA)


# Per Python worker: the item matrix of the last items_uri (its blocks, or the
# approximate index), so a worker reads it once for all its tasks and user blocks
# instead of once per user block: Spark's reuse of Python workers makes this the
# executor-wide broadcast of the matrix.
_ITEM_CACHE: dict[tuple, object] = {}
_USERS_PER_TASK = 200_000


def scoring_tasks(users: int, slots: int) -> int:
    """How many scoring tasks for ``users`` users on ``slots`` task slots.

    Tasks stream their users in Arrow batches, so their memory does not grow with
    their size; each task costs a scheduling round and a worker hand-over, so one
    task per slot is best, with more only so that a failed task redoes bounded work.
    """
    return max(1, min(users, max(slots, math.ceil(users / _USERS_PER_TASK))))


def _score_partition(
    items_uri: str, k: int, user_block: int, item_block: int, device: str, approximate: bool, cache_mb: int,
    model=None,
):
    """Builds the executor function of ``score_users`` (kept free of Spark objects)."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        on = scoring_device(device)
        learned = model.value if model is not None else None
        index, rows = _approximate_index(items_uri) if approximate else (None, None)
        with_scores = learned is not None
        blocks = None if approximate else _item_blocks(items_uri, item_block, cache_mb, with_scores)
        find = item_finder(items_uri, item_block, rows if rows is not None else blocks)
        for batch in batches:
            for start in range(0, batch.num_rows, user_block):
                users = batch.slice(start, user_block)
                vectors = _matrix(users.column("interest"))
                excluded = [set(chosen or ()) for chosen in users.column("excluded").to_pylist()]
                history = history_vectors(users, find)
                if index is not None:
                    yield _ranked_rows(users, index.search(vectors, k, excluded), history)
                    continue
                bonus = None
                if learned is not None:
                    bonus = learned.knn_bonus_block(users.column("hist_item").to_pylist())
                ranking = RunningTopK(vectors, k, excluded, on, bonus)
                source = blocks if blocks is not None else _read_item_blocks(items_uri, item_block, with_scores)
                for item_ids, item_vectors, score_vectors in source:
                    ranking.add(item_ids, item_vectors, score_vectors)
                yield _ranked_rows(users, ranking.results(), history)

    return run


def _read_item_blocks(
    items_uri: str, item_block: int, with_scores: bool = False
) -> Iterator[tuple[list[str], np.ndarray, np.ndarray | None]]:
    """(item ids, unit vectors, learned score vectors or None) of the item matrix, ``item_block`` items at a time."""
    import pyarrow.dataset as ds

    from interestlake.datasets.landing import readable_uri

    items = ds.dataset(readable_uri(items_uri), format="parquet")
    columns = [C.COL_ITEM_ID, C.COL_EMBEDDING] + (["score_vector"] if with_scores else [])
    for block in items.to_batches(columns=columns, batch_size=item_block):
        if block.num_rows:
            scores = _matrix(block.column("score_vector")) if with_scores else None
            yield block.column(C.COL_ITEM_ID).to_pylist(), _matrix(block.column(C.COL_EMBEDDING)), scores


class ItemRows:
    """Item id -> unit vector of an item matrix held in this worker (unknown ids: zeros)."""

    def __init__(self, item_ids: list[str], matrix: np.ndarray):
        self.matrix = matrix
        self.row = {item: row for row, item in enumerate(item_ids)}

    def vectors(self, item_ids: Sequence[str | None]) -> np.ndarray:
        rows = np.array([self.row.get(item, -1) for item in item_ids], dtype=np.int64)
        out = self.matrix[np.maximum(rows, 0)] if len(self.matrix) else np.zeros((len(rows), 0), np.float32)
        out[rows < 0] = 0.0
        return out


class CachedItems:
    """The item matrix kept in a worker: one array for lookups, iterated as views of ``item_block`` rows."""

    def __init__(self, item_ids: list[str], matrix: np.ndarray, scores: np.ndarray | None, item_block: int):
        self.rows = ItemRows(item_ids, matrix)
        self.blocks = [
            (item_ids[start:start + item_block], matrix[start:start + item_block],
             None if scores is None else scores[start:start + item_block])
            for start in range(0, len(item_ids), item_block)
        ]

    def __iter__(self):
        return iter(self.blocks)


def _item_blocks(items_uri: str, item_block: int, cache_mb: int, with_scores: bool = False) -> CachedItems | None:
    """The item matrix kept in this worker, or None when it is over ``cache_mb`` (then streamed)."""
    key = (items_uri, "exact", with_scores)
    if key not in _ITEM_CACHE:
        blocks, size = [], 0
        for block in _read_item_blocks(items_uri, item_block, with_scores):
            size += block[1].nbytes + (block[2].nbytes if block[2] is not None else 0)
            if size > cache_mb * 2**20:
                blocks = None
                break
            blocks.append(block)
        _ITEM_CACHE.clear()
        _ITEM_CACHE[key] = None if blocks is None else CachedItems(
            [item for ids, _, _ in blocks for item in ids],
            np.concatenate([vectors for _, vectors, _ in blocks]) if blocks else np.zeros((0, 0), np.float32),
            np.concatenate([scores for _, _, scores in blocks]) if blocks and with_scores else None,
            item_block,
        )
    return _ITEM_CACHE[key]


def item_finder(items_uri: str, item_block: int, held: CachedItems | ItemRows | None):
    """``find(item_ids) -> (n, d) vectors`` from the matrix this worker holds, else by one pass over its blocks."""
    if held is not None:
        return (held.rows if isinstance(held, CachedItems) else held).vectors

    def find(item_ids: Sequence[str | None]) -> np.ndarray:
        wanted = set(item_ids)
        ids, vectors = [], []
        for block_ids, block_vectors, _ in _read_item_blocks(items_uri, item_block):
            keep = [row for row, item in enumerate(block_ids) if item in wanted]
            ids += [block_ids[row] for row in keep]
            vectors.append(block_vectors[keep])
        width = vectors[0].shape[1] if vectors else 0
        return ItemRows(ids, np.concatenate(vectors) if vectors else np.zeros((0, width), np.float32)).vectors(item_ids)

    return find


def history_vectors(users: pa.RecordBatch, find) -> list[np.ndarray]:
    """Per user of the block: the (m, d) float32 vectors of their recent entries (``hist_vec``), newest first.

    Entries shipped without a vector (listed items, see ``reason_history``) take their
    item's vector from ``find`` (``item_finder``).
    """
    import pyarrow.compute as pc

    column, items = users.column("hist_vec"), users.column("hist_item")
    lengths = pc.fill_null(pc.list_value_length(column), 0).to_numpy(zero_copy_only=False)
    entries = column.flatten()
    shipped = ~entries.is_null().to_numpy(zero_copy_only=False)
    values = entries.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    missing = [item for item, has in zip(items.flatten().to_pylist(), shipped) if not has]
    looked_up = find(missing) if missing else None
    width = looked_up.shape[1] if looked_up is not None and looked_up.shape[1] else len(values) // max(int(shipped.sum()), 1)
    matrix = np.zeros((len(shipped), width), np.float32)
    if len(values):
        matrix[shipped] = values.reshape(-1, width)
    if looked_up is not None and looked_up.shape[1]:
        matrix[~shipped] = looked_up
    return np.split(matrix, np.cumsum(lengths)[:-1]) if len(lengths) else []


def _approximate_index(items_uri: str) -> tuple[ApproximateTopK, ItemRows]:
    """The FAISS index of the item matrix (and its rows, for lookups), built once per worker:
    building costs far more than a search."""
    key = (items_uri, "approximate")
    if key not in _ITEM_CACHE:
        ids, matrices = [], []
        for block_ids, block_vectors, _ in _read_item_blocks(items_uri, 65536):
            ids += block_ids
            matrices.append(block_vectors)
        _ITEM_CACHE.clear()
        index = ApproximateTopK(ids, np.concatenate(matrices))
        _ITEM_CACHE[key] = (index, ItemRows(index.item_ids, index.item_vectors))
    return _ITEM_CACHE[key]


def _matrix(vectors: pa.Array) -> np.ndarray:
    """(n, d) float32 matrix of a list<float> array whose entries all have length d."""
    if len(vectors) == 0:
        return np.zeros((0, 0), np.float32)
    return vectors.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(vectors), -1)


def _ranked_rows(users: pa.RecordBatch, results: list, history: list[np.ndarray]) -> pa.RecordBatch:
    """One row per (user, rank) with the reason naming the closest recent history entry (``history_vectors``)."""
    user_ids = users.column(C.COL_USER_ID).to_pylist()
    kinds, labels = users.column("hist_kind"), users.column("hist_label")
    seen_items = users.column("hist_item")
    out = {C.COL_USER_ID: [], C.COL_RANK: [], C.COL_ITEM_ID: [], C.COL_SCORE: [], C.COL_REASON: []}
    for row, best in enumerate(results):
        hist_kinds = kinds[row].as_py() or []
        hist_labels = labels[row].as_py() or []
        hist_items = seen_items[row].as_py() or []
        for rank, (item_id, score, item_vector) in enumerate(best, start=1):
            out[C.COL_USER_ID].append(user_ids[row])
            out[C.COL_RANK].append(rank)
            out[C.COL_ITEM_ID].append(item_id)
            out[C.COL_SCORE].append(score)
            out[C.COL_REASON].append(reason_for(item_id, item_vector, history[row], hist_kinds, hist_labels, hist_items))
    return pa.RecordBatch.from_pydict(out, schema=_RANKED_ARROW_SCHEMA)
