"""Landing rows: one reason code per rejected row, typed values for accepted ones."""

import gzip
import json
from datetime import datetime

import pytest

from interestlake.datasets import validation as V
from interestlake.datasets.landing import file_format, list_landing_files, read_records

EVENT = {"event_id": "e1", "user_id": "u1", "item_id": "i1", "event_type": "view", "ts": "2026-10-01T12:00:00Z"}


def reason(kind, record):
    result = V.validate_record(kind, record)
    return result.reason if isinstance(result, V.Rejection) else None


def test_valid_event_is_typed():
    row = V.validate_record("events", {**EVENT, "event_type": " VIEW ", "user_id": 42})
    assert row["event_type"] == "view"
    assert row["user_id"] == "42"
    assert row["ts"] == datetime(2026, 10, 1, 12, 0)
    assert row["text"] is None and row["rating"] is None


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"event_type": "teleport"}, V.UNKNOWN_EVENT_TYPE),
        ({"event_id": None}, V.EMPTY_ID),
        ({"user_id": "   "}, V.EMPTY_ID),
        ({"user_id": "u" * 300}, V.ID_TOO_LONG),
        ({"item_id": True}, V.INVALID_TYPE),
        ({"item_id": 1.5}, V.INVALID_TYPE),
        ({"ts": "yesterday"}, V.INVALID_TIMESTAMP),
        ({"ts": 1_790_000_000_000}, V.INVALID_TIMESTAMP),  # milliseconds, not seconds
        ({"ts": "1990-01-01T00:00:00Z"}, V.INVALID_TIMESTAMP),
        ({"event_type": "rate", "rating": 6}, V.INVALID_RATING),
        ({"event_type": "rate", "rating": "great"}, V.INVALID_RATING),
        ({"event_type": "rate"}, V.MISSING_FIELD),
        ({"event_type": "search", "item_id": None}, V.MISSING_FIELD),
        ({"text": [12]}, V.INVALID_TYPE),  # a number would be taken as its digits
    ],
)
def test_event_rejections(change, expected):
    assert reason("events", {**EVENT, **change}) == expected


def test_missing_fields_are_named():
    result = V.validate_record("events", {k: v for k, v in EVENT.items() if k != "ts"})
    assert result.reason == V.MISSING_FIELD and "ts" in result.detail
    result = V.validate_record("events", {k: v for k, v in EVENT.items() if k != "user_id"})
    assert result.reason == V.MISSING_FIELD and "user_id" in result.detail


def test_search_without_item_is_accepted_and_epoch_seconds_parse():
    row = V.validate_record("events", {**EVENT, "event_type": "search", "item_id": None, "text": "tent", "ts": 1790000000})
    assert row["item_id"] is None and row["text"] == "tent"
    assert row["ts"] == datetime(2026, 9, 21, 14, 13, 20)


def test_reviews_need_a_rating_in_range():
    review = {"review_id": "r1", "user_id": "u1", "item_id": "i1", "rating": "4", "text": "ok", "ts": "2026-10-01"}
    assert V.validate_record("reviews", review)["rating"] == 4.0
    assert reason("reviews", {**review, "rating": 0}) == V.INVALID_RATING
    assert reason("reviews", {k: v for k, v in review.items() if k != "rating"}) == V.MISSING_FIELD


def test_items_price_and_title():
    item = {"item_id": "i1", "title": " Tent ", "price": "19.90"}
    row = V.validate_record("items", item)
    assert row["title"] == "Tent" and row["price"] == 19.9 and row["updated_at"] is None
    assert reason("items", {**item, "price": -1}) == V.INVALID_PRICE
    assert reason("items", {**item, "price": "cheap"}) == V.INVALID_PRICE
    assert reason("items", {**item, "title": ""}) == V.MISSING_FIELD
    assert reason("items", [1, 2]) == V.INVALID_JSON


def test_unknown_kind_is_a_programming_error():
    with pytest.raises(ValueError, match="unknown landing kind"):
        V.validate_record("clicks", EVENT)


def test_json_lines_keep_line_numbers_and_report_bad_lines(tmp_path):
    path = tmp_path / "events.jsonl.gz"
    lines = [json.dumps(EVENT).encode(), b"", b"{not json", b"\xff\xfe bad bytes", json.dumps([1]).encode()]
    path.write_bytes(gzip.compress(b"\n".join(lines)))
    records = list(read_records(str(path)))
    assert [r.row_no for r in records] == [1, 3, 4, 5]
    assert records[0].record == EVENT
    assert records[1].rejection.reason == V.INVALID_JSON
    assert records[2].rejection.reason == V.INVALID_ENCODING
    assert records[3].record == [1]


def test_csv_parquet_and_json_array(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "e.csv").write_text("event_id,user_id,item_id,event_type,ts\ne1,u1,,search,2026-10-01\n")
    [csv_row] = list(read_records(str(tmp_path / "e.csv")))
    assert csv_row.record["item_id"] is None and csv_row.record["event_type"] == "search"
    pq.write_table(pa.Table.from_pylist([EVENT, EVENT]), tmp_path / "e.parquet")
    assert [r.row_no for r in read_records(str(tmp_path / "e.parquet"))] == [1, 2]
    (tmp_path / "e.json").write_text(json.dumps([EVENT, EVENT]))
    assert [r.record for r in read_records(str(tmp_path / "e.json"))] == [EVENT, EVENT]


def test_unreadable_and_unknown_files_become_one_rejection(tmp_path):
    (tmp_path / "broken.jsonl.gz").write_bytes(b"this is not gzip")
    (tmp_path / "notes.txt").write_text("hello")
    [broken] = list(read_records(str(tmp_path / "broken.jsonl.gz")))
    assert broken.row_no == 0 and broken.rejection.reason == V.UNREADABLE_FILE
    [unknown] = list(read_records(str(tmp_path / "notes.txt")))
    assert unknown.rejection.reason == V.UNKNOWN_FORMAT
    assert file_format("a.JSONL.GZ") == "json" and file_format("a.txt") is None


def test_listing_skips_hidden_files_and_missing_folders(tmp_path):
    folder = tmp_path / "events" / "2026" 
    folder.mkdir(parents=True)
    (folder / "b.jsonl").write_text("{}")
    (tmp_path / "events" / "a.jsonl").write_text("{}")
    (tmp_path / "events" / ".tmp-upload.jsonl").write_text("{}")
    (tmp_path / "events" / "_SUCCESS").write_text("")
    files = list_landing_files(str(tmp_path), "events")
    assert [f.path.split("events/")[1] for f in files] == ["2026/b.jsonl", "a.jsonl"]
    assert list_landing_files(str(tmp_path), "reviews") == []
