"""Interests stage: users' embedded history -> ``user_interests``, incrementally.

Only users with new events or reviews since the last commit are recomputed:
their stored long-term statistics are folded together with the statistics of
the new entries (``interestlake.models.interest.fold``), and the short-term
vector reads only their last N entries. Users whose history touches an item
whose vector is new or changed are rebuilt from their whole history, since
their statistics were summed with the old (or no) vector. The first run, a
parameter change or ``full=True`` recomputes everyone.
"""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from interestlake import constants as C
from interestlake.lake.schemas import table_spec
from interestlake.lake.tables import LakeTables
from interestlake.models.interest import DecayedStats, InterestParams, combine, decayed_stats, fold
from interestlake.pipeline.history import history_of_users, recent_entries, user_history
from interestlake.pipeline.run import DerivedInputs, RunContext, StageReport, derived_inputs
from interestlake.settings import Settings

STAGE = "interests"
INPUT_TABLES = (C.EVENTS, C.REVIEWS, C.ITEMS, C.TEXT_EMBEDDINGS, C.ITEM_EMBEDDINGS)
_VECTOR = T.ArrayType(T.FloatType())
_RESULT_SCHEMA = T.StructType(
    [
        T.StructField(C.COL_USER_ID, T.StringType(), False),
        T.StructField("long_term", _VECTOR, False),
        T.StructField("short_term", _VECTOR, False),
        T.StructField("interest", _VECTOR, False),
        T.StructField("decayed_sum", T.ArrayType(T.DoubleType()), False),
        T.StructField("decayed_mass", T.DoubleType(), False),
        T.StructField("last_event_at", T.TimestampType(), False),
    ]
)
_STATE_COLUMNS = [C.COL_USER_ID, "decayed_sum", "decayed_mass", "last_event_at"]


def interests(
    spark: SparkSession, lake: LakeTables, settings: Settings, run: RunContext, full: bool = False
) -> StageReport:
    """Updates ``user_interests`` for the users whose inputs changed.

    Args:
        spark: Active session.
        lake: Table layer.
        settings: Loaded settings (``interests``, ``encoder.version``).
        run: Run identity.
        full: Recompute every user from the whole history.

    Returns:
        Counts of users changed (folded or rebuilt) and rebuilt, and the input versions read.
    """
    report = StageReport(STAGE, run.run_id)
    version = settings.encoder.version
    inputs = derived_inputs(
        lake, report, C.USER_INTERESTS, INPUT_TABLES, {"encoder": version, **settings.interests.model_dump()}
    )
    if not full and inputs.unchanged:
        report.note = "inputs unchanged since the last commit; nothing to do"
        return report
    now = inputs.tables
    incremental = not full and inputs.same_params
    if incremental:
        new_events = lake.changes(C.EVENTS, inputs.since(C.EVENTS), now[C.EVENTS])
        new_reviews = lake.changes(C.REVIEWS, inputs.since(C.REVIEWS), now[C.REVIEWS])
        rebuild = _users_of_changed_items(lake, version, inputs, now).persist()
        active = new_events.select(C.COL_USER_ID).unionByName(new_reviews.select(C.COL_USER_ID))
        changed = active.unionByName(rebuild).distinct().persist()
        history = history_of_users(lake, version, now, changed)
        folded = user_history(lake, version, now, events=new_events, reviews=new_reviews).join(
            rebuild, C.COL_USER_ID, "left_anti"
        )
        entries = folded.unionByName(history.join(rebuild, C.COL_USER_ID, "left_semi"))
        state = (
            lake.read(C.USER_INTERESTS)
            .filter(F.col(C.COL_ENCODER_VERSION) == version)
            .join(changed, C.COL_USER_ID, "left_semi")
            .join(rebuild, C.COL_USER_ID, "left_anti")
            .select(*_STATE_COLUMNS)
        )
        report.counts["users_rebuilt"] = rebuild.count()
    else:
        history = user_history(lake, version, now)
        changed = history.select(C.COL_USER_ID).distinct().persist()
        entries = history
        state = lake.spark.createDataFrame([], T.StructType([table_spec(C.USER_INTERESTS).schema[c] for c in _STATE_COLUMNS]))
    report.counts["users_changed"] = changed.count()
    if report.counts["users_changed"] == 0:
        changed.unpersist()
        report.note = "no user has new history"
        return report

    recent = recent_entries(history, settings.interests.short_term_events)
    parts = entries.withColumn("recency", F.lit(None).cast("int")).unionByName(recent)
    params = InterestParams(**settings.interests.model_dump())
    vectors = (
        parts.groupBy(C.COL_USER_ID)
        .cogroup(state.groupBy(C.COL_USER_ID))
        .applyInPandas(_user_vectors(params), _RESULT_SCHEMA)
    )
    rows = (
        vectors.join(_counts(lake, now, changed), C.COL_USER_ID, "left")
        .fillna(0, ["event_count", "review_count"])
        .withColumn(C.COL_ENCODER_VERSION, F.lit(version))
        .withColumn(C.COL_RUN_ID, F.lit(run.run_id))
        # Wall-clock time, unique per write (a retry shares the run id and logical
        # date): recommend tells rewritten rows from copied ones by it.
        .withColumn(C.COL_UPDATED_AT, F.lit(datetime.now(timezone.utc)))
    )
    metadata = {
        "stage": STAGE, "run_id": run.run_id, "inputs": inputs.fingerprint,
        "mode": "incremental" if incremental else "full",
    }
    commit = lake.merge(C.USER_INTERESTS, rows, txn=run.txn(STAGE), metadata=metadata)
    changed.unpersist()
    if incremental:
        rebuild.unpersist()
    report.commits.append(commit)
    return report


def _users_of_changed_items(lake: LakeTables, version: str, inputs: DerivedInputs, now: dict) -> DataFrame:
    """Users with history on items whose vector appeared or changed since the last run."""
    users = lake.spark.createDataFrame([], f"{C.COL_USER_ID} string")
    if inputs.since(C.ITEM_EMBEDDINGS) == now[C.ITEM_EMBEDDINGS]:
        return users
    changed_items = [
        row[0]
        for row in lake.changes(C.ITEM_EMBEDDINGS, inputs.since(C.ITEM_EMBEDDINGS), now[C.ITEM_EMBEDDINGS])
        .filter(F.col(C.COL_ENCODER_VERSION) == version)
        .select(C.COL_ITEM_ID)
        .distinct()
        .collect()
    ]
    if not changed_items:
        return users
    # Scans events and reviews, but only when the catalog changed.
    for table in (C.EVENTS, C.REVIEWS):
        touched = lake.read(table, now[table]).filter(F.col(C.COL_ITEM_ID).isin(changed_items))
        users = users.unionByName(touched.select(C.COL_USER_ID))
    return users.distinct()


def _counts(lake: LakeTables, now: dict, users: DataFrame) -> DataFrame:
    """Events and reviews per changed user."""
    def count(table: str, name: str) -> DataFrame:
        return (
            lake.read(table, now[table]).join(F.broadcast(users), C.COL_USER_ID, "left_semi")
            .groupBy(C.COL_USER_ID).agg(F.count(F.lit(1)).alias(name))
        )

    return count(C.EVENTS, "event_count").join(count(C.REVIEWS, "review_count"), C.COL_USER_ID, "full")


def _seconds(ts: pd.Series) -> np.ndarray:
    return ts.astype("datetime64[us]").astype("int64").to_numpy() / 1e6


def _user_vectors(params: InterestParams):
    """Builds the per-user function: fold new entries into the stored statistics."""

    def compute(entries: pd.DataFrame, state: pd.DataFrame) -> pd.DataFrame:
        to_fold = entries[entries["recency"].isna()]
        recent = entries[entries["recency"].notna()].sort_values("recency", ascending=False)
        stats = None
        if len(state):
            row = state.iloc[0]
            stats = DecayedStats(np.asarray(row["decayed_sum"], dtype=np.float64), float(row["decayed_mass"]),
                                 float(_seconds(state["last_event_at"])[0]))
        if len(to_fold):
            new = decayed_stats(np.stack(to_fold[C.COL_EMBEDDING].to_numpy()), list(to_fold["kind"]),
                                _seconds(to_fold[C.COL_TS]), params)
            stats = fold(stats, new, params.half_life_days)
        if stats is None or len(recent) == 0:
            return pd.DataFrame(columns=_RESULT_SCHEMA.fieldNames())
        result = combine(stats, np.stack(recent[C.COL_EMBEDDING].to_numpy()), params)
        user = recent[C.COL_USER_ID].iloc[0]
        return pd.DataFrame(
            {
                C.COL_USER_ID: [user],
                "long_term": [result.long_term.tolist()],
                "short_term": [result.short_term.tolist()],
                "interest": [result.interest.tolist()],
                "decayed_sum": [stats.weighted_sum.tolist()],
                "decayed_mass": [stats.mass],
                # Microseconds, as stored: a float ns value would not convert to Arrow safely.
                "last_event_at": [pd.Timestamp(round(stats.ref_seconds * 1e6), unit="us")],
            }
        )

    return compute
