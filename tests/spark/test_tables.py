"""The Delta table layer: writes, idempotent commits and snapshot isolation."""

import threading
from datetime import datetime

import pytest
from deltalake import DeltaTable

from interestlake import constants as C
from interestlake.lake.schemas import TABLES
from interestlake.lake.tables import LakeError, Txn, open_lake

pytestmark = pytest.mark.spark
NOW = datetime(2026, 11, 1, 12, 0)


def recs(spark, users, items_per_user=3, tag="a"):
    rows = [
        (f"u{u}", rank, f"{tag}{u}-{rank}", 1.0 / rank, f"because {tag}", f"run-{tag}", NOW)
        for u in users
        for rank in range(1, items_per_user + 1)
    ]
    return spark.createDataFrame(rows, TABLES[C.RECOMMENDATIONS].schema)


def content(lake, table=C.RECOMMENDATIONS, version=None):
    return sorted(tuple(r) for r in lake.read(table, version).collect())


def test_every_table_is_created_with_its_declared_schema(lake):
    for name, spec in TABLES.items():
        table = DeltaTable(lake.uri(name))
        assert [f.name for f in table.schema().fields] == spec.columns
        assert lake.read(name).count() == 0
        assert lake.read(name).schema.fieldNames() == spec.columns


def test_append_commits_once_per_transaction_id(spark, lake):
    first = lake.append(C.RECOMMENDATIONS, recs(spark, [1, 2]), txn=Txn("test.stage", 7))
    assert first.committed and first.rows == 6
    retried = lake.append(C.RECOMMENDATIONS, recs(spark, [1, 2]), txn=Txn("test.stage", 7))
    assert not retried.committed and retried.skipped == "already committed"
    older = lake.append(C.RECOMMENDATIONS, recs(spark, [3]), txn=Txn("test.stage", 6))
    assert not older.committed
    assert lake.read(C.RECOMMENDATIONS).count() == 6
    assert lake.version(C.RECOMMENDATIONS) == first.version
    assert lake.committed(C.RECOMMENDATIONS, Txn("test.stage", 7))
    assert not lake.committed(C.RECOMMENDATIONS, Txn("test.stage", 8))


def test_commit_adds_files_with_statistics(spark, lake):
    lake.append(C.RECOMMENDATIONS, recs(spark, [1, 2, 3]))
    actions = DeltaTable(lake.uri(C.RECOMMENDATIONS)).get_add_actions(flatten=True)
    import pyarrow as pa

    table = pa.table(actions)
    assert sum(table.column("num_records").to_pylist()) == 9
    assert min(table.column("min.rank").to_pylist()) == 1
    assert max(table.column("max.rank").to_pylist()) == 3


def test_empty_append_commits_nothing(spark, lake):
    before = lake.version(C.RECOMMENDATIONS)
    result = lake.append(C.RECOMMENDATIONS, recs(spark, []))
    assert not result.committed and result.skipped == "no rows"
    assert lake.version(C.RECOMMENDATIONS) == before


def test_overwrite_replaces_everything(spark, lake):
    lake.append(C.RECOMMENDATIONS, recs(spark, [1, 2]))
    lake.overwrite(C.RECOMMENDATIONS, recs(spark, [3], tag="b"))
    assert {r.user_id for r in lake.read(C.RECOMMENDATIONS).collect()} == {"u3"}


def test_merge_replaces_groups_and_rewrites_only_touched_files(spark, lake):
    for user in range(4):
        lake.append(C.RECOMMENDATIONS, recs(spark, [user]).coalesce(1))
    files_before = set(DeltaTable(lake.uri(C.RECOMMENDATIONS)).file_uris())
    # u1 gets a shorter new list, u9 is new; u0, u2, u3 must be untouched.
    result = lake.merge(C.RECOMMENDATIONS, recs(spark, [1, 9], items_per_user=2, tag="b"), on=[C.COL_USER_ID])
    assert result.files_removed == 1
    rows = lake.read(C.RECOMMENDATIONS).collect()
    by_user = {}
    for row in rows:
        by_user.setdefault(row.user_id, []).append(row.item_id)
    assert sorted(by_user["u1"]) == ["b1-1", "b1-2"]
    assert sorted(by_user["u9"]) == ["b9-1", "b9-2"]
    assert sorted(by_user["u0"]) == ["a0-1", "a0-2", "a0-3"]
    assert len(rows) == 3 * 3 + 2 + 2
    files_after = set(DeltaTable(lake.uri(C.RECOMMENDATIONS)).file_uris())
    assert len(files_before - files_after) == 1


def test_merge_on_keys_upserts(spark, lake):
    lake.append(C.RECOMMENDATIONS, recs(spark, [1]))
    update = spark.createDataFrame(
        [("u1", 2, "new", 9.0, "r", "run-b", NOW), ("u1", 4, "added", 0.1, "r", "run-b", NOW)],
        TABLES[C.RECOMMENDATIONS].schema,
    )
    lake.merge(C.RECOMMENDATIONS, update)
    items = {(r.rank, r.item_id) for r in lake.read(C.RECOMMENDATIONS).collect()}
    assert items == {(1, "a1-1"), (2, "new"), (3, "a1-3"), (4, "added")}


def test_snapshot_read_is_pinned_to_its_version(spark, lake):
    lake.append(C.RECOMMENDATIONS, recs(spark, [1, 2]))
    old_version = lake.version(C.RECOMMENDATIONS)
    snapshot = lake.read(C.RECOMMENDATIONS)
    expected_old = sorted(tuple(r) for r in snapshot.collect())
    lake.overwrite(C.RECOMMENDATIONS, recs(spark, [3], tag="b"))
    # The DataFrame taken before the write still reads the old version, whole.
    assert sorted(tuple(r) for r in snapshot.collect()) == expected_old
    assert content(lake, version=old_version) == expected_old
    assert {r[0] for r in content(lake)} == {"u3"}


def test_reader_during_writes_sees_whole_versions_only(spark, lake):
    lake.overwrite(C.RECOMMENDATIONS, recs(spark, range(5), tag="v0"))
    versions = {"v0": content(lake)}
    seen, errors = [], []

    def write():
        try:
            for n in range(1, 4):
                tag = f"v{n}"
                lake.merge(C.RECOMMENDATIONS, recs(spark, range(5), tag=tag), on=[C.COL_USER_ID])
                versions[tag] = content(lake)
        except Exception as exc:  # surfaced below
            errors.append(exc)

    writer = threading.Thread(target=write)
    writer.start()
    while writer.is_alive():
        seen.append(content(lake))
    writer.join()
    seen.append(content(lake))
    assert not errors
    valid = list(versions.values())
    assert all(state in valid for state in seen), "a reader saw a mix of two versions"


def test_failed_commit_leaves_no_visible_rows(spark, lake):
    bad = spark.createDataFrame(
        [("u1", 1, None, 1.0, "r", "run", NOW)],
        "user_id string, rank int, item_id string, score double, reason string, run_id string, generated_at timestamp",
    )
    with pytest.raises(ValueError, match="null values in required column"):
        lake.append(C.RECOMMENDATIONS, bad)
    assert lake.read(C.RECOMMENDATIONS).count() == 0


def test_missing_required_column_is_named(spark, lake):
    df = spark.createDataFrame([("u1", 1)], "user_id string, rank int")
    with pytest.raises(ValueError, match="item_id"):
        lake.append(C.RECOMMENDATIONS, df)


def test_commit_metadata_is_readable(spark, lake):
    lake.append(C.RECOMMENDATIONS, recs(spark, [1]), metadata={"stage": "recommend", "inputs": {"events": 3}})
    lake.append(C.RECOMMENDATIONS, recs(spark, [2]), metadata={"stage": "other"})
    assert lake.last_metadata(C.RECOMMENDATIONS, stage="recommend")["inputs"] == {"events": 3}
    assert lake.last_metadata(C.RECOMMENDATIONS)["stage"] == "other"


def test_reading_a_missing_table_says_how_to_create_it(spark, settings):
    fresh = open_lake(spark, settings.lake)
    with pytest.raises(LakeError, match="does not exist"):
        fresh.read(C.EVENTS)


def test_register_views_makes_tables_queryable_by_name(spark, lake):
    lake.append(C.RECOMMENDATIONS, recs(spark, [1, 2]))
    lake.register_views()
    assert spark.sql("SELECT count(DISTINCT user_id) AS n FROM recommendations").first().n == 2


@pytest.mark.delta_spark
def test_delta_spark_backend_writes_the_same_tables(spark, settings):
    from interestlake.lake.tables import DeltaSparkTables, delta_spark_available

    if not delta_spark_available(spark):
        pytest.skip(
            "delta-spark jars are not on this Spark classpath (no Maven access here); "
            "this test runs on clusters that ship io.delta:delta-spark"
        )
    delta = DeltaSparkTables(spark, settings.lake)
    delta.ensure_tables([C.RECOMMENDATIONS])
    delta.append(C.RECOMMENDATIONS, recs(spark, [1, 2]), txn=Txn("t", 1))
    assert not delta.append(C.RECOMMENDATIONS, recs(spark, [1, 2]), txn=Txn("t", 1)).committed
    delta.merge(C.RECOMMENDATIONS, recs(spark, [1], items_per_user=1, tag="b"), on=[C.COL_USER_ID])
    assert sorted(r.item_id for r in delta.read(C.RECOMMENDATIONS).filter("user_id = 'u1'").collect()) == ["b1-1"]


def test_delta_spark_backend_refuses_clearly_without_jars(spark, settings):
    from interestlake.lake.tables import DeltaSparkTables, delta_spark_available

    if delta_spark_available(spark):
        pytest.skip("delta-spark jars are present; the refusal only applies where they are missing")
    with pytest.raises(LakeError, match="Delta jars are not on the Spark classpath"):
        DeltaSparkTables(spark, settings.lake)


def test_upsert_rows_replaces_by_key_without_a_spark_job(lake):
    row = {"run_id": "r1", "stage": "ingest", "logical_date": NOW, "status": "failed", "counts": {"files": 1}}
    lake.upsert_rows(C.PIPELINE_RUNS, [row])
    lake.upsert_rows(C.PIPELINE_RUNS, [{**row, "status": "succeeded"}, {**row, "stage": "encode"}])
    rows = {r.stage: r for r in lake.read(C.PIPELINE_RUNS).collect()}
    assert set(rows) == {"ingest", "encode"}
    assert rows["ingest"].status == "succeeded" and rows["ingest"].counts == {"files": 1}


def test_record_progress_commits_metadata_and_no_rows_once_per_transaction(spark, lake):
    lake.append(C.RECOMMENDATIONS, recs(spark, [1]))
    before = content(lake)
    first = lake.record_progress(C.RECOMMENDATIONS, txn=Txn("test.progress", 3), metadata={"stage": "t", "inputs": {"x": 1}})
    again = lake.record_progress(C.RECOMMENDATIONS, txn=Txn("test.progress", 3), metadata={"stage": "t"})
    assert first.committed and first.rows == 0 and again.skipped == "already committed"
    assert content(lake) == before
    assert lake.last_metadata(C.RECOMMENDATIONS, stage="t")["inputs"] == {"x": 1}


def test_kept_scratch_is_written_once_per_key_and_again_when_half_written(spark, lake):
    from pathlib import Path

    writes = []

    def write(uri):
        writes.append(uri)
        spark.createDataFrame([(len(writes),)], "a int").write.mode("overwrite").parquet(uri)

    uri, wrote = lake.kept_scratch("matrix", "versions-1", write)
    assert wrote and writes == [uri]
    assert lake.kept_scratch("matrix", "versions-1", write) == (uri, False) and len(writes) == 1
    assert spark.read.parquet(uri).collect()[0].a == 1
    # A folder a killed run left half-written (no _SUCCESS) is written again.
    (Path(uri.removeprefix("file://")) / "_SUCCESS").unlink()
    assert lake.kept_scratch("matrix", "versions-1", write) == (uri, True) and len(writes) == 2
    other, wrote = lake.kept_scratch("matrix", "versions-2", write)
    assert other != uri and wrote and not Path(uri.removeprefix("file://")).exists()


def test_an_arrow_table_merges_like_a_dataframe_and_its_driver_reads_match_spark(spark, lake):
    """The small-batch forms: Arrow rows written by the driver, changes and lookups read there."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    for user in range(4):
        lake.append(C.RECOMMENDATIONS, recs(spark, [user]).coalesce(1))
    since = lake.version(C.RECOMMENDATIONS)
    # Keys longer than 32 characters have no min/max statistics in the Delta log.
    long_user = "u" * 40
    update = recs(spark, [1, 9], items_per_user=2, tag="b").toArrow()
    update = pa.concat_tables([update, pa.Table.from_pylist(
        [{"user_id": long_user, "rank": 1, "item_id": "x", "score": 0.5, "reason": "r", "run_id": "run-b", "generated_at": NOW}],
        schema=update.schema,
    )])
    arrow_result = lake.merge(C.RECOMMENDATIONS, update, on=[C.COL_USER_ID])
    assert arrow_result.files_removed == 1 and arrow_result.source_rows == 5
    by_user = {}
    for row in lake.read(C.RECOMMENDATIONS).collect():
        by_user.setdefault(row.user_id, []).append(row.item_id)
    assert sorted(by_user["u1"]) == ["b1-1", "b1-2"] and sorted(by_user["u0"]) == ["a0-1", "a0-2", "a0-3"]
    assert by_user[long_user] == ["x"]

    now = lake.version(C.RECOMMENDATIONS)
    columns = [C.COL_USER_ID, C.COL_RANK, C.COL_ITEM_ID]
    on_driver = sorted(tuple(r.values()) for r in lake.change_rows(C.RECOMMENDATIONS, since, now, columns).to_pylist())
    by_spark = sorted(tuple(r) for r in lake.changes(C.RECOMMENDATIONS, since, now).select(*columns).collect())
    assert on_driver == by_spark and len(on_driver) == 5  # rows a merge only copied are not changes
    assert lake.added_rows(C.RECOMMENDATIONS, since, now) == 5  # from the Delta log's statistics
    found = lake.read_arrow(C.RECOMMENDATIONS, [C.COL_ITEM_ID], ds.field(C.COL_USER_ID).isin([long_user, "u0"]))
    assert sorted(found.column(C.COL_ITEM_ID).to_pylist()) == ["a0-1", "a0-2", "a0-3", "x"]


def test_an_arrow_table_missing_a_required_column_is_named(lake):
    import pyarrow as pa

    with pytest.raises(ValueError, match="item_id"):
        lake.append(C.RECOMMENDATIONS, pa.table({"user_id": ["u1"], "rank": [1]}))


def test_a_commit_that_fails_writing_its_log_entry_leaves_no_stray_files(spark, lake, monkeypatch):
    """A full disk can fail the Delta log write after the Parquet files were written: those go too.

    The failure is injected where the disk broke it in CI (the log entry's write), since filling a
    disk at that exact moment depends on sizes; tests/faults/test_full_disk.py fills a real one.
    """
    from pathlib import Path

    table = Path(lake.uri(C.RECOMMENDATIONS))

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(DeltaTable, "create_write_transaction", full_disk)
        with pytest.raises(OSError, match="No space left"):
            lake.append(C.RECOMMENDATIONS, recs(spark, [1, 2]))
    visible = [p for p in table.rglob("*.parquet") if not any(part.startswith(("_", ".")) for part in p.relative_to(table).parts)]
    assert visible == []
    assert lake.read(C.RECOMMENDATIONS).count() == 0
    lake.append(C.RECOMMENDATIONS, recs(spark, [1, 2]))  # the disk has room again: the same write lands
    assert lake.read(C.RECOMMENDATIONS).count() == 6
