"""Recommend stage: users x items -> top-K ``recommendations`` with a reason each.

Scoring runs on executors over (user block x item block) pairs, like Spark
ALS's ``recommendForAllUsers``: each pair yields at most K candidates per user,
and a window keeps the best K per user. Neither the users x items matrix nor
the item table is ever collected to the driver.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from interestlake import constants as C
from interestlake.lake.tables import LakeTables
from interestlake.models.scoring import reason_for, top_k_block
from interestlake.pipeline.history import history_of_users, recent_entries
from interestlake.pipeline.run import RunContext, StageReport, derived_inputs
from interestlake.settings import Settings

STAGE = "recommend"
INPUT_TABLES = (C.USER_INTERESTS, C.ITEM_EMBEDDINGS, C.ITEMS, C.EVENTS, C.REVIEWS, C.TEXT_EMBEDDINGS)
_CANDIDATE_SCHEMA = T.StructType(
    [
        T.StructField(C.COL_USER_ID, T.StringType(), False),
        T.StructField(C.COL_ITEM_ID, T.StringType(), False),
        T.StructField(C.COL_SCORE, T.DoubleType(), False),
        T.StructField(C.COL_REASON, T.StringType(), False),
    ]
)


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
    params = {"encoder": version, "short_term_events": settings.interests.short_term_events, **settings.recommend.model_dump()}
    inputs = derived_inputs(lake, report, C.RECOMMENDATIONS, INPUT_TABLES, params)
    if not full and inputs.unchanged:
        report.note = "inputs unchanged since the last commit; nothing to do"
        return report
    now = inputs.tables
    incremental = (
        not full
        and inputs.same_params
        and all(inputs.since(t) == now[t] for t in (C.ITEMS, C.ITEM_EMBEDDINGS))
    )

    of_version = F.col(C.COL_ENCODER_VERSION) == version
    users = lake.read(C.USER_INTERESTS, now[C.USER_INTERESTS]).filter(of_version).select(C.COL_USER_ID, "interest")
    if incremental:
        changed = (
            lake.changes(
                C.USER_INTERESTS, inputs.since(C.USER_INTERESTS), now[C.USER_INTERESTS],
                identity=[C.COL_USER_ID, C.COL_ENCODER_VERSION, C.COL_UPDATED_AT],
            )
            .filter(of_version)
            .select(C.COL_USER_ID)
        )
        users = users.join(changed, C.COL_USER_ID, "left_semi")
    users = users.persist()
    # Only items still in the catalog can be recommended.
    items = (
        lake.read(C.ITEM_EMBEDDINGS, now[C.ITEM_EMBEDDINGS])
        .filter(of_version)
        .join(lake.read(C.ITEMS, now[C.ITEMS]).select(C.COL_ITEM_ID), C.COL_ITEM_ID, "left_semi")
        .select(C.COL_ITEM_ID, C.COL_EMBEDDING)
    )
    n_users, n_items = users.count(), items.count()
    report.counts.update(users_scored=n_users, items=n_items)
    if n_users == 0:
        users.unpersist()
        report.note = "no user's interests changed"
        return report
    scored = users.select(C.COL_USER_ID)
    history = history_of_users(lake, version, now, scored)
    user_side = users.join(excluded_items(lake, now, scored, settings.recommend.exclude_event_types), C.COL_USER_ID, "left").join(
        reason_history(recent_entries(history, settings.interests.short_term_events)), C.COL_USER_ID, "left"
    )
    candidates = score_blocks(
        user_side, items, settings.recommend.k,
        user_blocks=math.ceil(n_users / settings.recommend.user_block_size),
        item_blocks=math.ceil(n_items / settings.recommend.item_block_size),
    )
    ranked = candidates.withColumn(
        C.COL_RANK,
        F.row_number().over(
            Window.partitionBy(C.COL_USER_ID).orderBy(F.col(C.COL_SCORE).desc(), F.col(C.COL_ITEM_ID))
        ),
    ).filter(F.col(C.COL_RANK) <= settings.recommend.k)
    rows = ranked.withColumn(C.COL_RUN_ID, F.lit(run.run_id)).withColumn("generated_at", F.lit(run.timestamp))
    metadata = {
        "stage": STAGE, "run_id": run.run_id, "inputs": inputs.fingerprint,
        "mode": "incremental" if incremental else "full",
    }
    if incremental:
        commit = lake.merge(C.RECOMMENDATIONS, rows, on=[C.COL_USER_ID], txn=run.txn(STAGE), metadata=metadata)
    else:
        commit = lake.overwrite(C.RECOMMENDATIONS, rows, txn=run.txn(STAGE), metadata=metadata)
    users.unpersist()
    report.commits.append(commit)
    return report


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


def reason_history(recent: DataFrame) -> DataFrame:
    """(user_id, hist_kind, hist_item, hist_label, hist_vec): recent entries as arrays, newest first."""
    # collect_list keeps no order: sort by recency (1 = newest).
    grouped = recent.groupBy(C.COL_USER_ID).agg(
        F.sort_array(F.collect_list(F.struct("recency", "kind", C.COL_ITEM_ID, "label", C.COL_EMBEDDING))).alias("_hist")
    )
    return grouped.select(
        C.COL_USER_ID,
        F.col("_hist.kind").alias("hist_kind"),
        F.col(f"_hist.{C.COL_ITEM_ID}").alias("hist_item"),
        F.col("_hist.label").alias("hist_label"),
        F.col(f"_hist.{C.COL_EMBEDDING}").alias("hist_vec"),
    )


def score_blocks(user_side: DataFrame, items: DataFrame, k: int, user_blocks: int, item_blocks: int) -> DataFrame:
    """Top-K candidates of every user in every item block (user_id, item_id, score, reason)."""
    user_blocks, item_blocks = max(1, user_blocks), max(1, item_blocks)
    ublocks = (
        user_side.withColumn("_ublock", F.pmod(F.xxhash64(C.COL_USER_ID), F.lit(user_blocks)))
        .groupBy("_ublock")
        .agg(F.collect_list(F.struct(*[c for c in user_side.columns])).alias("users"))
    )
    iblocks = (
        items.withColumn("_iblock", F.pmod(F.xxhash64(C.COL_ITEM_ID), F.lit(item_blocks)))
        .groupBy("_iblock")
        .agg(F.collect_list(F.struct(C.COL_ITEM_ID, C.COL_EMBEDDING)).alias("items"))
    )
    pairs = ublocks.crossJoin(iblocks).repartition(user_blocks * item_blocks)
    return pairs.mapInArrow(_score_pairs(k), _CANDIDATE_SCHEMA)


def _score_pairs(k: int):
    """Builds the executor function over Arrow batches of block pairs."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            users_column, items_column = batch.column("users"), batch.column("items")
            for row in range(batch.num_rows):
                yield _score_pair(users_column[row].values, items_column[row].values, k)

    return run


def _matrix(vectors: pa.Array) -> np.ndarray:
    """(n, d) float32 matrix of a list<float> array whose entries all have length d."""
    if len(vectors) == 0:
        return np.zeros((0, 0), np.float32)
    return vectors.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(vectors), -1)


def _score_pair(users: pa.StructArray, items: pa.StructArray, k: int) -> pa.RecordBatch:
    item_ids = items.field(C.COL_ITEM_ID).to_pylist()
    item_vectors = _matrix(items.field(C.COL_EMBEDDING))
    position = {item: index for index, item in enumerate(item_ids)}
    excluded = [
        [position[item] for item in (chosen or []) if item in position]
        for chosen in users.field("excluded").to_pylist()
    ]
    top = top_k_block(_matrix(users.field("interest")), item_vectors, k, excluded)
    user_ids = users.field(C.COL_USER_ID).to_pylist()
    kinds, labels, vectors = users.field("hist_kind"), users.field("hist_label"), users.field("hist_vec")
    seen_items = users.field("hist_item")
    out = {C.COL_USER_ID: [], C.COL_ITEM_ID: [], C.COL_SCORE: [], C.COL_REASON: []}
    for row, (indices, scores) in enumerate(top):
        history = _matrix(vectors[row].values) if vectors[row].is_valid else np.zeros((0, 0), np.float32)
        hist_kinds = kinds[row].as_py() or []
        hist_labels = labels[row].as_py() or []
        hist_items = seen_items[row].as_py() or []
        for index, score in zip(indices, scores):
            out[C.COL_USER_ID].append(user_ids[row])
            out[C.COL_ITEM_ID].append(item_ids[index])
            out[C.COL_SCORE].append(float(score))
            out[C.COL_REASON].append(
                reason_for(item_ids[index], item_vectors[index], history, hist_kinds, hist_labels, hist_items)
            )
    return pa.RecordBatch.from_pydict(out, schema=pa.schema([
        pa.field(C.COL_USER_ID, pa.string(), False),
        pa.field(C.COL_ITEM_ID, pa.string(), False),
        pa.field(C.COL_SCORE, pa.float64(), False),
        pa.field(C.COL_REASON, pa.string(), False),
    ]))
