"""Each stage's gather run both ways on the same lake: Spark's reader and the Arrow reader give the same rows.

The small-batch path reads with ``ArrowReader`` on the driver, everything else with
``SparkReader``; both hand their raw rows to the same Arrow function. These tests
compare what comes out, column by column, on a lake with the awkward cases (texts that
trim to nothing, tabs Spark keeps, users without text, a user spanning both versions).
"""

import pyarrow as pa
import pytest

from interestlake import constants as C
from interestlake.pipeline.gather import ArrowReader, SparkReader
from interestlake.pipeline.run import RunContext

pytestmark = [pytest.mark.spark, pytest.mark.slow]

ITEMS = [
    {"item_id": i, "title": title, "category": cat, "price": 10.0, "description": f"{title} for {cat}.",
     "updated_at": "2026-09-01T00:00:00Z"}
    for i, title, cat in [("g1", "Electric Guitar", "guitars"), ("g2", "Guitar Capo", "guitars"),
                          ("c1", "Espresso Beans", "coffee"), ("c2", "Coffee Grinder", "coffee")]
]


def event(eid, user, item, kind="view", day=1, **extra):
    return {"event_id": eid, "user_id": user, "item_id": item, "event_type": kind,
            "ts": f"2026-10-{day:02d}T12:00:00Z", **extra}


def review(rid, user, item, text, rating=4, day=1):
    return {"review_id": rid, "user_id": user, "item_id": item, "rating": rating, "text": text,
            "ts": f"2026-10-{day:02d}T15:00:00Z"}


def write_jsonl(path, rows):
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def run(n):
    return RunContext.create(f"gather-{n}", f"2026-11-01T00:{n:02d}:00Z")


@pytest.fixture
def two_batches(pipeline, lake, settings):
    """A lake ingested twice: (versions after the first batch, versions after the second)."""
    from pathlib import Path

    landing = Path(settings.lake.landing_uri)
    write_jsonl(landing / "items" / "a.jsonl", ITEMS)
    write_jsonl(landing / "events" / "old.jsonl", [
        event("o1", "u1", "g1"), event("o2", "u1", None, kind="search", text="strat pickups", day=2),
        event("o3", "u2", "c1", kind="purchase"), event("o4", "u3", None, kind="search", text="burr grinder", day=3),
    ])
    write_jsonl(landing / "reviews" / "old.jsonl", [review("r0", "u2", "c1", "Rich crema, dark roast.", day=2)])
    pipeline.run_stage("ingest", run(1))
    pipeline.run_stage("encode", run(1))  # the cache holds the first batch's texts
    since = lake.versions([C.EVENTS, C.REVIEWS, C.ITEMS])
    write_jsonl(landing / "events" / "new.jsonl", [
        event("n1", "u1", None, kind="search", text="  espresso beans ", day=5),  # Spark's trim: spaces only
        event("n2", "u1", None, kind="search", text="\tespresso beans\n", day=5),  # tabs and newlines are kept
        event("n3", "u2", None, kind="search", text="   ", day=5),                  # blank: no text
        event("n4", "u4", "g2", kind="view", text="not a query", day=5),           # only searches are queries
        event("n5", "u5", None, kind="search", text="咖啡 ☕", day=6),
        event("n6", "u5", None, kind="search", text="咖啡 ☕", day=6),
        event("n7", "u6", None, kind="search", text="burr grinder", day=6),        # in the cache already
    ])
    write_jsonl(landing / "reviews" / "new.jsonl", [
        review("r1", "u1", "g1", " Great tone, stays in tune. ", day=6),
        review("r2", "u2", "c1", "", day=6),
        review("r3", "u6", "g2", "Sturdy capo.", rating=5, day=6),
    ])
    pipeline.run_stage("ingest", run(2))
    return since, lake.versions([C.EVENTS, C.REVIEWS, C.ITEMS])


def as_table(rows) -> pa.Table:
    """Spark rows as an Arrow table (timestamps stay UTC instants), or an Arrow table as it is."""
    return rows if isinstance(rows, pa.Table) else rows.toArrow()


def assert_same_columns(spark_rows, arrow_rows, keys):
    """The two results hold the same rows: compared column by column, both sorted by ``keys``."""
    by_spark, by_arrow = as_table(spark_rows), as_table(arrow_rows)
    assert sorted(by_spark.column_names) == sorted(by_arrow.column_names)
    order = [(key, "ascending") for key in keys]
    by_spark, by_arrow = by_spark.sort_by(order), by_arrow.sort_by(order)
    assert by_spark.num_rows == by_arrow.num_rows
    for name in by_arrow.column_names:
        left, right = by_spark.column(name), by_arrow.column(name)
        if pa.types.is_timestamp(left.type):
            left, right = left.cast(pa.int64()), right.cast(pa.int64())
        assert left.to_pylist() == right.to_pylist(), name


def test_topics_gathers_the_same_rows_both_ways(lake, settings, two_batches):
    from interestlake.pipeline.topics import topic_rows, writers_of, written_rows

    since, now = two_batches
    spark_reader, arrow_reader = SparkReader(lake), ArrowReader(lake)
    new_by_spark = written_rows(spark_reader, now, since=since)
    new_by_arrow = written_rows(arrow_reader, now, since=since)
    assert_same_columns(new_by_spark, new_by_arrow, [C.COL_USER_ID, C.COL_TS, C.COL_TEXT])
    assert new_by_arrow.num_rows == 8  # 5 searches (ingest holds back the blank one), 3 reviews (one empty): raw rows

    writers_by_spark, writers_by_arrow = writers_of(spark_reader, new_by_spark), writers_of(arrow_reader, new_by_arrow)
    assert_same_columns(writers_by_spark, writers_by_arrow, [C.COL_USER_ID])
    # u2 wrote only blanks and u4 only viewed: no new text.
    assert writers_by_arrow.column(C.COL_USER_ID).to_pylist() == ["u1", "u5", "u6"]

    conf = settings.steer.topics.model_copy(update={"max_texts": 2})
    by_spark = topic_rows(spark_reader, now, conf, writers_by_spark)
    by_arrow = topic_rows(arrow_reader, now, conf, writers_by_arrow)
    assert_same_columns(by_spark, by_arrow, [C.COL_USER_ID, C.COL_TOPIC])
    assert set(as_table(by_arrow).column(C.COL_USER_ID).to_pylist()) == {"u1", "u5", "u6"}


def test_encode_gathers_the_same_texts_both_ways(lake, settings, two_batches):
    from interestlake.pipeline.history import texts_to_encode

    since, now = two_batches
    found = {}
    for name, read in (("spark", SparkReader(lake)), ("arrow", ArrowReader(lake))):
        texts = texts_to_encode(read, now, since, catalog=False)
        todo = read.absent_from(texts, C.TEXT_EMBEDDINGS, C.COL_TEXT_HASH,
                                [(C.COL_ENCODER_VERSION, "=", settings.encoder.version)])
        found[name] = (texts, todo)
    assert_same_columns(found["spark"][0], found["arrow"][0], [C.COL_TEXT_HASH])
    assert_same_columns(found["spark"][1], found["arrow"][1], [C.COL_TEXT_HASH])
    texts, todo = (as_table(rows).column(C.COL_TEXT).to_pylist() for rows in found["arrow"])
    new = ["espresso beans", "\tespresso beans\n", "咖啡 ☕", "Great tone, stays in tune.", "Sturdy capo."]
    assert sorted(texts) == sorted([*new, "burr grinder"])
    assert sorted(todo) == sorted(new)  # the cached text is not encoded again
    with pytest.raises(ValueError, match="catalog's texts are read with Spark"):
        texts_to_encode(ArrowReader(lake), now, since, catalog=True)


def test_recommend_gathers_the_same_changed_users_both_ways(pipeline, lake, settings, two_batches):
    from pathlib import Path

    from interestlake.pipeline.recommend import _users
    from interestlake.pipeline.run import DerivedInputs

    for stage in ("encode", "interests"):
        pipeline.run_stage(stage, run(3))
    since = lake.versions([C.USER_INTERESTS])
    write_jsonl(Path(settings.lake.landing_uri) / "events" / "third.jsonl",
                [event("t1", "u1", "c2", day=7), event("t2", "u6", "g1", kind="cart", day=7)])
    for stage in ("ingest", "encode", "interests"):
        pipeline.run_stage(stage, run(4))
    now = lake.versions([C.USER_INTERESTS])
    inputs = DerivedInputs(now, "p", {"tables": since, "params": "p"})
    version = settings.encoder.version
    for incremental in (True, False):
        by_spark = _users(SparkReader(lake), version, inputs, incremental)
        if incremental:
            by_arrow = _users(ArrowReader(lake), version, inputs, incremental)
            assert_same_columns(by_spark, by_arrow, [C.COL_USER_ID])
            # Only the users the interests stage rewrote, not those its merge copied.
            assert by_arrow.column(C.COL_USER_ID).to_pylist() == ["u1", "u6"]
        else:
            assert by_spark.count() == 6
        by_spark.unpersist()


def test_recommend_gathers_the_same_user_facts_both_ways(spark, pipeline, lake, settings, two_batches):
    from pathlib import Path

    from interestlake.pipeline.evidence import user_facts

    write_jsonl(Path(settings.lake.landing_uri) / "events" / "rated.jsonl", [
        event("x1", "u1", "c1", kind="rate", day=7, rating=2.0),
        event("x2", "u1", "c1", kind="rate", day=8, rating=5.0),  # the latest rating counts
        event("x3", "u3", "g2", kind="cart", day=7),               # not an excluded type
        event("x4", "u3", "g1", kind="purchase", day=7),
    ])
    pipeline.run_stage("ingest", run(5))
    versions = lake.versions([C.EVENTS, C.REVIEWS])
    users = pa.table({C.COL_USER_ID: ["u1", "u2", "u3", "u4", "u5", "u6", "nobody"]})
    types = settings.recommend.exclude_event_types
    # Two rows per Arrow batch: users span batches, as a long history does.
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "2")
    try:
        by_spark = user_facts(SparkReader(lake), versions, spark.createDataFrame(users.to_pandas()), types).toArrow()
    finally:
        spark.conf.unset("spark.sql.execution.arrow.maxRecordsPerBatch")
    by_arrow = user_facts(ArrowReader(lake), versions, users, types)
    assert_same_columns(by_spark, by_arrow, [C.COL_USER_ID])
    facts = {row[C.COL_USER_ID]: row for row in by_arrow.to_pylist()}
    assert "nobody" not in facts and "u5" not in facts  # no events of these kinds, no reviews: no row
    assert facts["u1"]["rated_items"] == ["c1", "g1"] and facts["u1"]["rated_values"] == [5.0, 4.0]
    assert facts["u2"]["excluded"] == ["c1"] and facts["u2"]["rated_values"] == [4.0]
    assert "purchase" in types and "cart" not in types
    assert facts["u3"]["excluded"] == ["g1"] and facts["u3"]["rated_items"] is None
