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


@pytest.fixture
def stored_then_new(pipeline, lake, settings, two_batches):
    """user_interests after the two batches, then a third batch: (versions after interests ran, versions now)."""
    from pathlib import Path

    from interestlake.pipeline.interests import INPUT_TABLES

    for stage in ("encode", "interests"):
        pipeline.run_stage(stage, run(3))
    since = lake.versions([*INPUT_TABLES, C.USER_INTERESTS])
    landing = Path(settings.lake.landing_uri)
    write_jsonl(landing / "events" / "third.jsonl", [
        event("t1", "u1", "c1", kind="rate", day=7, rating=1.0),                  # a dislike
        event("t2", "u1", "g2", kind="rate", day=7, rating=5.0),
        event("t3", "u3", "g1", kind="search", text=" tuner  ", day=8),           # a search about an item
        event("t4", "u3", "zz", kind="view", day=8),                              # not in the catalog: no title
        event("t5", "u7", "c2", kind="cart", day=8, rating=1.0),                  # rated, but not a rate event
    ])
    write_jsonl(landing / "reviews" / "third.jsonl", [
        review("r4", "u2", "c2", "Broke after a week, waste of money.", rating=3, day=8),  # middling, negative text
        review("r5", "u6", "g1", "Terrible? No, great!", rating=4, day=8),                  # negative words, rated well
        review("r6", "u7", "g1", "  ", rating=2, day=8),                                    # low rating, no text
    ])
    for stage in ("ingest", "encode"):
        pipeline.run_stage(stage, run(4))
    return since, lake.versions([*INPUT_TABLES, C.USER_INTERESTS])


def test_interests_gathers_the_same_history_both_ways(spark, lake, settings, stored_then_new):
    from interestlake.models.feedback import DislikeRule
    from interestlake.pipeline.history import counted, history_refs, history_rows, resolve_vectors, stored_refs
    from interestlake.pipeline.interests import INPUT_TABLES, _user_rows
    from interestlake.pipeline.run import DerivedInputs

    since, now = stored_then_new
    rule = DislikeRule(max_rating=2.0, review_text_max_rating=3.0)
    version = settings.encoder.version
    readers = {"spark": SparkReader(lake), "arrow": ArrowReader(lake)}
    raw = {name: history_rows(read, now, since=since) for name, read in readers.items()}
    assert_same_columns(raw["spark"], raw["arrow"], [C.COL_USER_ID, C.COL_TS, C.COL_ITEM_ID])
    assert raw["arrow"].num_rows == 8

    refs = {name: history_refs(raw[name], rule) for name in readers}
    ref_keys = [C.COL_USER_ID, C.COL_TS, "kind", C.COL_ITEM_ID, C.COL_TEXT_HASH]
    assert_same_columns(refs["spark"], refs["arrow"], ref_keys)
    entries = {(r[C.COL_USER_ID], r[C.COL_ITEM_ID], r[C.COL_TEXT_HASH] is not None): (r["kind"], r["label"])
               for r in refs["arrow"].to_pylist()}
    assert entries[("u1", "c1", False)] == ("dislike", "Espresso Beans")
    assert entries[("u1", "g2", False)] == ("rate", "Guitar Capo")
    assert entries[("u2", "c2", False)] == entries[("u2", "c2", True)] == ("dislike", "Coffee Grinder")
    assert entries[("u6", "g1", True)] == ("review", "Electric Guitar")
    assert entries[("u7", "c2", False)] == ("cart", "Coffee Grinder")
    assert entries[("u7", "g1", False)] == ("dislike", "Electric Guitar") and ("u7", "g1", True) not in entries
    assert entries[("u3", "g1", False)] == ("search", "Electric Guitar")
    assert entries[("u3", None, True)] == ("search", "tuner")
    assert entries[("u3", "zz", False)] == ("view", None)
    without_rule = {r["kind"] for r in history_refs(raw["arrow"]).to_pylist()}
    assert "dislike" not in without_rule

    def summed(counts) -> dict:
        totals = {}
        for row in as_table(counts).to_pylist():
            e, r = totals.get(row[C.COL_USER_ID], (0, 0))
            totals[row[C.COL_USER_ID]] = (e + row["event_count"], r + row["review_count"])
        return totals

    assert summed(counted(raw["spark"])) == summed(counted(raw["arrow"])) == {
        "u1": (2, 0), "u2": (0, 1), "u3": (2, 0), "u6": (0, 1), "u7": (1, 1)}

    users = pa.table({C.COL_USER_ID: ["u1", "u2", "u6", "nobody"]})
    stored = {"spark": readers["spark"].of_users(C.USER_INTERESTS, None, [C.COL_USER_ID, "recent"],
                                                 spark.createDataFrame(users.to_pandas())),
              "arrow": readers["arrow"].of_users(C.USER_INTERESTS, None, [C.COL_USER_ID, "recent"], users)}
    exploded = {name: stored_refs(rows) for name, rows in stored.items()}
    assert_same_columns(exploded["spark"], exploded["arrow"], [C.COL_USER_ID, "recency"])
    recent = {r[C.COL_USER_ID]: r["recent"] for r in stored["arrow"].to_pylist()}
    for row in exploded["arrow"].to_pylist():
        assert {k: row[k] for k in recent[row[C.COL_USER_ID]][0]} == recent[row[C.COL_USER_ID]][row["recency"] - 1]
    assert exploded["arrow"].num_rows == sum(len(r) for r in recent.values())

    resolved = {name: resolve_vectors(read, version, now, refs[name]) for name, read in readers.items()}
    assert_same_columns(resolved["spark"], resolved["arrow"], ref_keys)
    assert 0 < as_table(resolved["arrow"]).num_rows < refs["arrow"].num_rows  # "zz" has no vector

    inputs = DerivedInputs(now, "p", {"tables": since, "params": "p"})
    assert since[C.ITEM_EMBEDDINGS] == now[C.ITEM_EMBEDDINGS]
    for whole in (False, True):
        rows = {name: as_table(_user_rows(read, version, inputs, rule, whole, True)[0]) for name, read in readers.items()}
        kinds = {name: table.filter(pa.compute.is_valid(table.column("kind"))) for name, table in rows.items()}
        assert_same_columns(kinds["spark"], kinds["arrow"], [*ref_keys, "fold"])
        states = {name: table.filter(pa.compute.is_null(table.column("kind"))) for name, table in rows.items()}
        stats = {name: table.filter(pa.compute.is_valid(table.column("decayed_mass"))) for name, table in states.items()}
        assert_same_columns(stats["spark"], stats["arrow"], [C.COL_USER_ID])
        assert summed(states["spark"].filter(pa.compute.is_null(states["spark"].column("decayed_mass")))) == summed(
            states["arrow"].filter(pa.compute.is_null(states["arrow"].column("decayed_mass"))))
        folded = set(kinds["arrow"].filter(kinds["arrow"].column("fold")).column(C.COL_USER_ID).to_pylist())
        stored_users = set(stats["arrow"].column(C.COL_USER_ID).to_pylist())
        assert folded == {"u1", "u2", "u3", "u6", "u7"}
        # Folded incrementally: the stored statistics of the users who had some; rebuilt whole: none.
        assert stored_users == (set() if whole else {"u1", "u2", "u3", "u6"})


def test_recommend_gathers_the_same_user_side_both_ways(spark, pipeline, lake, settings, stored_then_new):
    from interestlake.pipeline.evidence import user_side
    from interestlake.pipeline.recommend import INPUT_TABLES

    steer = settings.steer.model_copy(update={
        "negative": settings.steer.negative.model_copy(update={"enabled": True}),
        "needs": settings.steer.needs.model_copy(update={"max_queries": 1}),
    })
    steered = settings.model_copy(update={"steer": steer})
    pipeline.settings = steered
    pipeline.run_stage("interests", run(5))  # the third batch, and user_topics
    versions = lake.versions(INPUT_TABLES)
    columns = [C.COL_USER_ID, "interest", "recent"]
    of_version = [(C.COL_ENCODER_VERSION, "=", settings.encoder.version)]
    ids = pa.table({C.COL_USER_ID: ["u1", "u2", "u3", "u5", "u6", "u7", "nobody"]})
    users = {"arrow": ArrowReader(lake).of_users(C.USER_INTERESTS, None, columns, ids, of_version),
             "spark": SparkReader(lake).of_users(C.USER_INTERESTS, None, columns, spark.createDataFrame(ids.to_pandas()),
                                                 of_version)}
    sides = {}
    for conf in (steered, settings.model_copy(update={"steer": settings.steer.model_copy(update={"enabled": False})})):
        # Two rows per Arrow batch: users span batches, as a long history does.
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "2")
        try:
            by_spark = user_side(SparkReader(lake), conf, versions, users["spark"]).toArrow()
        finally:
            spark.conf.unset("spark.sql.execution.arrow.maxRecordsPerBatch")
        by_arrow = user_side(ArrowReader(lake), conf, versions, users["arrow"])
        assert by_spark.column_names == by_arrow.column_names
        assert_same_columns(by_spark, by_arrow, [C.COL_USER_ID])
        # In the users' order, one row each.
        assert by_arrow.column(C.COL_USER_ID).to_pylist() == users["arrow"].column(C.COL_USER_ID).to_pylist()
        sides[conf.steer.enabled] = {row[C.COL_USER_ID]: row for row in by_arrow.to_pylist()}
    assert "topics" not in next(iter(sides[False].values()))
    side = sides[True]
    assert set(side) == {"u1", "u2", "u3", "u5", "u6", "u7"}
    assert side["u1"]["disliked_items"] == ["c1"] and side["u2"]["disliked_items"] == ["c2"]
    assert side["u7"]["disliked_items"] == ["g1"] and side["u6"]["disliked_items"] is None
    # The newest query (tabs kept, so it sorts first of the two at one time); "strat pickups" is older.
    assert side["u1"]["need_text"] == ["\tespresso beans\n"]
    assert side["u3"]["need_text"] == ["tuner"]  # the newest of its queries (max_queries 1)
    assert side["u5"]["need_text"] == ["咖啡 ☕"] and side["u5"]["topics"]
    for row in side.values():
        assert row["ref_ts"] == row["hist_ts"][0]
        texts = [i for i, item in enumerate(row["hist_item"]) if item is None]
        assert set(texts) <= set(row["hist_shipped"]) and len(row["hist_vec"]) == len(row["hist_shipped"])
