"""Interests stage: each user's embedded history -> ``user_interests``.

The vectors are computed per user on executors (``applyInPandas``) with the
formulas of ``interestlake.models.interest``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from interestlake import constants as C
from interestlake.lake.tables import LakeTables
from interestlake.models.interest import InterestParams, user_interest
from interestlake.models.encoder import EMBEDDING_TYPE
from interestlake.pipeline.history import user_history
from interestlake.pipeline.run import RunContext, StageReport, inputs_fingerprint, unchanged_since_last_commit
from interestlake.settings import Settings

STAGE = "interests"
INPUT_TABLES = (C.EVENTS, C.REVIEWS, C.ITEMS, C.TEXT_EMBEDDINGS, C.ITEM_EMBEDDINGS)
_VECTORS_SCHEMA = T.StructType(
    [
        T.StructField(C.COL_USER_ID, T.StringType(), False),
        T.StructField("long_term", EMBEDDING_TYPE, False),
        T.StructField("short_term", EMBEDDING_TYPE, False),
        T.StructField("interest", EMBEDDING_TYPE, False),
        T.StructField("last_event_at", T.TimestampType(), False),
    ]
)


def interests(spark: SparkSession, lake: LakeTables, settings: Settings, run: RunContext) -> StageReport:
    """Recomputes ``user_interests`` when any input table or parameter changed.

    Returns:
        Counts of users written, or a note that the inputs were unchanged.
    """
    report = StageReport(STAGE, run.run_id)
    params = InterestParams(**settings.interests.model_dump())
    inputs = inputs_fingerprint(lake, INPUT_TABLES, {"encoder": settings.encoder.version, **settings.interests.model_dump()})
    if unchanged_since_last_commit(lake, C.USER_INTERESTS, STAGE, inputs):
        report.note = "inputs unchanged since the last commit; nothing to do"
        return report

    history = user_history(lake, settings.encoder.version)
    vectors = history.groupBy(C.COL_USER_ID).applyInPandas(_interest_rows(params), _VECTORS_SCHEMA)
    events = lake.read(C.EVENTS).groupBy(C.COL_USER_ID).agg(F.count(F.lit(1)).alias("event_count"))
    reviews = lake.read(C.REVIEWS).groupBy(C.COL_USER_ID).agg(F.count(F.lit(1)).alias("review_count"))
    rows = (
        vectors.join(events, C.COL_USER_ID, "left")
        .join(reviews, C.COL_USER_ID, "left")
        .fillna(0, ["event_count", "review_count"])
        .withColumn(C.COL_ENCODER_VERSION, F.lit(settings.encoder.version))
        .withColumn(C.COL_RUN_ID, F.lit(run.run_id))
        .withColumn(C.COL_UPDATED_AT, F.lit(run.timestamp))
    )
    metadata = {"stage": STAGE, "run_id": run.run_id, "inputs": inputs}
    commit = lake.overwrite(C.USER_INTERESTS, rows, txn=run.txn(STAGE), metadata=metadata)
    report.counts["users"] = commit.rows
    report.commits.append(commit)
    return report


def _interest_rows(params: InterestParams):
    """Builds the per-user function run by applyInPandas (no Spark objects inside)."""

    def compute(history: pd.DataFrame) -> pd.DataFrame:
        seconds = history[C.COL_TS].astype("datetime64[us]").astype("int64").to_numpy() / 1e6
        vectors = np.stack(history[C.COL_EMBEDDING].to_numpy())
        result = user_interest(vectors, list(history["kind"]), seconds, params)
        return pd.DataFrame(
            {
                C.COL_USER_ID: [history[C.COL_USER_ID].iloc[0]],
                "long_term": [result.long_term.tolist()],
                "short_term": [result.short_term.tolist()],
                "interest": [result.interest.tolist()],
                "last_event_at": [history[C.COL_TS].max()],
            }
        )

    return compute

