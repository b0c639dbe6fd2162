"""The in-process SQL engine and status pieces that need no lake: table names, types, settings, messages."""

import pytest

from interestlake import constants as C
from interestlake.lake.query import _duckdb_type, _first_line, unknown_table_message
from interestlake.lake.schemas import TABLES
from interestlake.settings import SettingsError

from tests.conftest import make_settings


def test_the_engine_knows_every_declared_table_in_the_same_order():
    assert list(C.LAKE_TABLES) == list(TABLES)


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
