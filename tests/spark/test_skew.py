"""Skewed history: one user with a million events completes, in bounded memory, using their last N."""

import time
from datetime import datetime, timezone

import numpy as np
import pytest
from pyspark.sql import functions as F

from interestlake import constants as C
from interestlake.models.interest import InterestParams, short_term
from interestlake.pipeline.interests import interests
from interestlake.pipeline.run import RunContext

pytestmark = [pytest.mark.spark, pytest.mark.slow]

HEAVY_EVENTS = 1_000_000
ITEMS = 20
# The fold's memory follows rows, not vector width: narrow vectors keep the test's
# shuffle small (384-wide ones would shuffle 1.5 GB for nothing it checks).
DIM = 16
START = datetime(2026, 1, 1, tzinfo=timezone.utc)


def test_one_user_with_a_million_events_uses_the_last_n(spark, lake, settings):
    version = settings.encoder.version
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(ITEMS, DIM))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    now = datetime.now(timezone.utc)
    lake.append(C.ITEMS, spark.createDataFrame(
        [(f"i{i}", f"Item {i}", START) for i in range(ITEMS)], f"{C.COL_ITEM_ID} string, {C.COL_TITLE} string, {C.COL_UPDATED_AT} timestamp",
    ))
    lake.append(C.ITEM_EMBEDDINGS, spark.createDataFrame(
        [(f"i{i}", version, f"h{i}", [float(x) for x in vectors[i]]) for i in range(ITEMS)],
        f"{C.COL_ITEM_ID} string, {C.COL_ENCODER_VERSION} string, {C.COL_TEXT_HASH} string, {C.COL_EMBEDDING} array<float>",
    ))
    # Item of event n: n * 7 mod ITEMS, one second apart, so the newest N are known.
    heavy = spark.range(HEAVY_EVENTS).select(
        F.concat(F.lit("h"), F.col("id").cast("string")).alias(C.COL_EVENT_ID),
        F.lit("heavy").alias(C.COL_USER_ID),
        F.concat(F.lit("i"), ((F.col("id") * 7) % ITEMS).cast("string")).alias(C.COL_ITEM_ID),
        F.lit(C.EVENT_VIEW).alias(C.COL_EVENT_TYPE),
        F.timestamp_seconds(F.lit(int(START.timestamp())) + F.col("id")).alias(C.COL_TS),
        F.lit("skew-test").alias("source"),
    )
    light = spark.createDataFrame(
        [(f"l{u}-{n}", f"light{u}", f"i{n}", C.EVENT_CLICK, START, "skew-test") for u in range(3) for n in range(5)],
        heavy.schema,
    )
    lake.append(C.EVENTS, heavy.unionByName(light).withColumn("ingested_at", F.lit(now)))

    started = time.monotonic()
    report = interests(spark, lake, settings, RunContext.create("skew", now))
    seconds = time.monotonic() - started
    print(f"\ninterests over {HEAVY_EVENTS} events of one user: {seconds:.1f}s")

    assert report.counts["users_changed"] == 4
    row = lake.read(C.USER_INTERESTS).filter("user_id = 'heavy'").first()
    last_n = settings.interests.short_term_events
    assert row.event_count == HEAVY_EVENTS and len(row.recent) == last_n
    newest = list(range(HEAVY_EVENTS - 1, HEAVY_EVENTS - 1 - last_n, -1))
    assert [r.item_id for r in row.recent] == [f"i{n * 7 % ITEMS}" for n in newest]
    # short_term is the attention over exactly those N vectors (oldest first).
    window = np.stack([vectors[n * 7 % ITEMS] for n in reversed(newest)])
    expected = short_term(window, InterestParams(**settings.interests.model_dump()))
    assert np.abs(np.asarray(row.short_term) - expected).max() < 1e-5
