"""The in-process SQL engine without Spark: table names, types, settings, messages, and both read paths."""

import json
import os
import time

import pytest

from interestlake import constants as C
from interestlake.lake.query import _duckdb_type, _first_line, unknown_table_message
from interestlake.lake.schemas import TABLES
from interestlake.settings import SettingsError

from tests.conftest import make_settings


def test_the_engine_knows_every_declared_table_in_the_same_order():
    assert list(C.LAKE_TABLES) == list(TABLES)


def test_the_layout_fingerprint_is_that_of_the_declared_schemas():
    """Readers without Spark tell a current lake by it: update it with every schema change."""
    from interestlake.lake.layout import LAYOUT_FINGERPRINT, layout_fingerprint, maybe_outdated

    declared = {name: spec.columns for name, spec in TABLES.items()}
    assert layout_fingerprint(declared) == LAYOUT_FINGERPRINT, (
        f"lake/schemas.py changed: set LAYOUT_FINGERPRINT in lake/layout.py to {layout_fingerprint(declared)!r}")
    assert not maybe_outdated(declared) and not maybe_outdated({name: None for name in TABLES})
    # A column more or less, a table missing: outdated.
    assert maybe_outdated({**declared, C.EVENTS: declared[C.EVENTS][:-1]})
    assert maybe_outdated({**declared, C.USER_TOPICS: None})


def test_delta_types_map_to_duckdb_types():
    vector = {"type": "array", "elementType": "float", "containsNull": True}
    counts = {"type": "map", "keyType": "string", "valueType": "long", "valueContainsNull": True}
    ref = {"type": "struct", "fields": [{"name": "ts", "type": "timestamp"}, {"name": "kind", "type": "string"}]}
    assert [_duckdb_type(t) for t in ("string", "long", "integer", "double", "boolean", "timestamp")] == [
        "VARCHAR", "BIGINT", "INTEGER", "DOUBLE", "BOOLEAN", "TIMESTAMPTZ"]
    assert _duckdb_type(vector) == "FLOAT[]"
    assert _duckdb_type(counts) == "MAP(VARCHAR, BIGINT)"
    assert _duckdb_type({"type": "array", "elementType": ref, "containsNull": False}) == 'STRUCT("ts" TIMESTAMPTZ, "kind" VARCHAR)[]'
    assert _duckdb_type("decimal(10,2)") == "DECIMAL(10,2)"


def test_messages_are_one_line():
    # Spark's ParseException message starts with a newline: the first line used to be empty.
    assert _first_line("\n[PARSE_SYNTAX_ERROR] Syntax error at or near 'SELEC'.\n\n== SQL ==\nSELEC") == (
        "[PARSE_SYNTAX_ERROR] Syntax error at or near 'SELEC'.")
    assert unknown_table_message("nope", ["events", "items"]) == "unknown table 'nope'; the lake's tables are: events, items"
    assert "none yet" in unknown_table_message("nope", [])


def test_the_list_age_threshold_is_validated(tmp_path):
    assert make_settings(tmp_path).status.max_list_age_minutes == 60
    assert make_settings(tmp_path, {"INTERESTLAKE__STATUS__MAX_LIST_AGE_MINUTES": "5"}).status.max_list_age_minutes == 5
    with pytest.raises(SettingsError, match="status.max_list_age_minutes"):
        make_settings(tmp_path, {"INTERESTLAKE__STATUS__MAX_LIST_AGE_MINUTES": "0"})


def test_a_filter_on_a_column_without_log_statistics_finds_its_rows(tmp_path):
    """Our writers keep min/max of user ids out of the Delta log; delta-rs 1.6's own dataset then
    filters every row out (docs/sql.md: Reading the outputs elsewhere). Both of our read paths must not."""
    import duckdb
    import pyarrow as pa
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq
    from deltalake import DeltaTable, Schema
    from deltalake.transaction import AddAction, create_table_with_add_actions

    from interestlake.lake.query import LakeSnapshot, _arrow

    settings = make_settings(tmp_path / "lake")
    root = settings.lake.table_uri(C.RECOMMENDATIONS)
    os.makedirs(root)
    rows = pa.table({C.COL_USER_ID: ["u-0001", "u-0002", "u-0001"], C.COL_RANK: pa.array([1, 1, 2], pa.int32())})
    pq.write_table(rows, f"{root}/part-0.parquet")
    stats = {"numRecords": 3, "minValues": {C.COL_RANK: 1}, "maxValues": {C.COL_RANK: 2},
             "nullCount": {C.COL_USER_ID: 0, C.COL_RANK: 0}}
    add = AddAction("part-0.parquet", os.path.getsize(f"{root}/part-0.parquet"), {}, int(time.time() * 1000), True,
                    json.dumps(stats))
    create_table_with_add_actions(root, Schema.from_arrow(rows.schema), [add], mode="error")
    table = DeltaTable(root)
    wanted = ds.field(C.COL_USER_ID) == "u-0001"
    assert table.to_pyarrow_dataset().to_table(filter=wanted).num_rows == 0  # the delta-rs behaviour avoided

    snapshot = LakeSnapshot(settings.lake)
    found = snapshot.query(f"SELECT {C.COL_RANK} FROM {C.RECOMMENDATIONS} WHERE {C.COL_USER_ID} = 'u-0001' ORDER BY 1")
    assert found.rows == [{C.COL_RANK: 1}, {C.COL_RANK: 2}]
    assert snapshot.available == [C.RECOMMENDATIONS]
    snapshot.close()
    # Object stores' tables go through pyarrow's filesystems instead of DuckDB's reader.
    db = duckdb.connect()
    db.register("recs", _arrow(table, [root + "/part-0.parquet"]))
    assert db.execute("SELECT count(*) FROM recs WHERE user_id = 'u-0001'").fetchone()[0] == 2
