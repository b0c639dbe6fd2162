"""Drifting inputs without Spark: extra fields, changed types, other encodings, and the mixed bad-input set."""

import codecs
import json
from datetime import date, datetime, timezone
from decimal import Decimal

from interestlake.datasets import validation as V
from interestlake.datasets.checks import check_landing
from interestlake.datasets.landing import as_utf8, check_file, list_landing_files

from tests.mixed_bad_input import write_mixed_landing

EVENT = {"event_id": "e1", "user_id": "u1", "item_id": "i1", "event_type": "view", "ts": "2026-10-01T12:00:00Z"}
WRITTEN = datetime(2026, 10, 2, tzinfo=timezone.utc)


def validate(kind, record):
    return V.validate_record(kind, record, WRITTEN)


def test_unknown_fields_are_ignored_and_named_never_valued():
    row = validate("events", {**EVENT, "session": "private-token-123", "Device\x00Type": 1})
    assert row["event_id"] == "e1" and "session" not in row
    assert V.unknown_fields("events", {**EVENT, "session": "private-token-123", "Device\x00Type": 1}) == [
        "Device?Type", "session"]
    assert V.unknown_fields("events", EVENT) == [] and V.unknown_fields("events", [1]) == []
    assert V.unknown_fields("items", {"item_id": "i", "title": "t", "x" * 500: 1}) == ["x" * V.MAX_FIELD_NAME_CHARS]


def test_numbers_and_text_are_coerced_where_the_meaning_is_clear():
    # Numeric strings for numbers, numbers for ids and texts, decimals, dates, bytes.
    rate = validate("events", {**EVENT, "event_id": 7, "event_type": "rate", "rating": " 4.5 ", "ts": "1790000000"})
    assert (rate["event_id"], rate["rating"], rate["ts"]) == ("7", 4.5, datetime(2026, 9, 21, 14, 13, 20))
    item = validate("items", {"item_id": Decimal("42.00"), "title": 1984.0, "category": 3, "price": Decimal("9.99"),
                              "updated_at": date(2026, 9, 1)})
    assert (item["item_id"], item["title"], item["category"], item["price"], item["updated_at"]) == (
        "42", "1984", "3", 9.99, datetime(2026, 9, 1))
    assert validate("events", {**EVENT, "user_id": b"u1"})["user_id"] == "u1"
    # What has no clear meaning is rejected with the field named.
    assert validate("events", {**EVENT, "user_id": b"\xff"}).reason == V.INVALID_ENCODING
    assert validate("events", {**EVENT, "item_id": Decimal("4.5")}).reason == V.INVALID_TYPE
    assert validate("events", {**EVENT, "item_id": float("inf")}).reason == V.INVALID_TYPE
    assert validate("events", {**EVENT, "event_type": "search", "text": True}).reason == V.INVALID_TYPE
    assert validate("events", {**EVENT, "user_id": b"  "}).reason == V.EMPTY_ID
    assert validate("items", {"item_id": "i", "title": "t", "price": "1,50"}).reason == V.INVALID_PRICE


def test_encodings_are_decoded_by_their_mark_or_as_windows_1252():
    text = '{"text": "café ☕"}\n'
    for codec in ("utf-16", "utf-16-be", "utf-32", "utf-32-be", "utf-8-sig"):
        data = text.encode(codec)
        if codec.endswith("-be"):
            data = (codecs.BOM_UTF16_BE if "16" in codec else codecs.BOM_UTF32_BE) + data
        decoded, encoding, rejection = as_utf8(data)
        assert (decoded.decode("utf-8"), rejection) == (text, None), codec
        assert encoding == (None if codec == "utf-8-sig" else codec.removesuffix("-be"))
    assert as_utf8(text.encode("utf-8")) == (text.encode("utf-8"), None, None)
    # No mark, not UTF-8, no multi-byte sequence: a one-byte legacy encoding.
    legacy = '{"text": "naïve café – “quoted” €5"}\n'
    assert as_utf8(legacy.encode("cp1252")) == (legacy.encode("utf-8"), "cp1252", None)
    # The five bytes Windows-1252 leaves undefined are read as Latin-1.
    assert as_utf8(b"caf\xe9 x\x81")[0].decode("utf-8") == "café x\x81"
    # Stray bytes that are no part of a word: UTF-8 with broken rows, not Latin-1.
    assert as_utf8(b'{"user_id": "\xff\xfe"}\n') == (b'{"user_id": "\xff\xfe"}\n', None, None)
    # UTF-8 with a few broken bytes stays as it is: only those rows are rejected.
    mixed = "咖啡\n".encode("utf-8") + b"\xff\xfe\n"
    assert as_utf8(mixed) == (mixed, None, None)
    broken = codecs.BOM_UTF16_LE + b"{\x00\x00\xd8"
    _, _, rejection = as_utf8(broken)
    assert rejection.reason == V.INVALID_ENCODING and "UTF-16 byte-order mark" in rejection.detail


def test_csv_rows_with_more_or_fewer_cells_than_the_header_are_rejected(tmp_path):
    path = tmp_path / "e.csv"
    path.write_text("event_id,user_id,item_id,event_type,ts\ne1,u1,i1,view,2026-10-01\ne2,u1,i1,view,2026-10-01,x\n"
                    "e3,u1\ne4,u1,i1,view,2026-10-01\n")
    rows = list(check_file("events", str(path), WRITTEN)[1])
    assert [(r.row_no, getattr(r.result, "reason", None)) for r in rows] == [
        (1, None), (2, V.INVALID_CSV_ROW), (3, V.INVALID_CSV_ROW), (4, None)]
    assert rows[1].result.detail == "the row has 6 cells, the header 5"
    assert rows[2].result.detail == "the row has 2 cells, the header 5"


def test_the_mixed_set_has_thirty_kinds_each_quarantined_with_its_reason(tmp_path):
    landing = tmp_path / "landing"
    expected = write_mixed_landing(landing)
    assert len({case.label for case in expected.cases}) == len(expected.cases) >= 30
    quarantined, accepted, notes = [], {kind: [] for kind in expected.keys}, {kind: {} for kind in expected.keys}
    keys = {"events": "event_id", "reviews": "review_id", "items": "item_id"}
    for kind in expected.keys:
        for found in list_landing_files(str(landing), kind):
            for row in check_file(kind, found.path, found.mtime)[1]:
                for note in row.notes:
                    notes[kind][note] = notes[kind].get(note, 0) + 1
                name = found.path.rsplit("/", 1)[1]
                if isinstance(row.result, V.Rejection):
                    quarantined.append((kind, name, row.row_no, row.result.reason))
                else:
                    accepted[kind].append(row.result[keys[kind]])
    assert sorted(quarantined) == expected.quarantined()
    for kind in expected.keys:
        assert set(accepted[kind]) == expected.keys[kind], kind
        assert len(accepted[kind]) - len(set(accepted[kind])) == expected.duplicates[kind], kind
    assert notes == expected.notes
    # `validate` reports the same, names of unknown fields included, and no values.
    check = check_landing(str(landing))
    assert check.counts["events"]["accepted"] == len(expected.keys["events"])
    assert check.notes["events"]["unknown_field.session"] == 1
    summary = check.summary() + json.dumps(check.to_json())
    assert "s-9" not in summary and "unknown_field.helpful_votes 5" in summary and "decoded_cp1252 1" in summary


def test_json_lines_stream_in_bounded_pieces_and_overlong_lines_are_rejected_unread(tmp_path, monkeypatch):
    import gzip

    import interestlake.datasets.landing as landing

    # Tiny chunks and line limit: every line crosses chunk boundaries, one line is too long.
    monkeypatch.setattr(landing, "STREAM_CHUNK_BYTES", 7)
    monkeypatch.setattr(landing, "MAX_LINE_BYTES", 300)
    rows = [{**EVENT, "event_id": f"e{n}"} for n in range(5)]
    rows[2] = {**EVENT, "event_id": "long", "event_type": "search", "text": "k" * 1000}
    text = "".join(json.dumps(r) + "\n" for r in rows)
    (tmp_path / "plain.jsonl").write_text(text)
    # Two gzip members (a concatenated .gz is one valid file).
    half = len(text) // 2
    (tmp_path / "two.jsonl.gz").write_bytes(gzip.compress(text[:half].encode()) + gzip.compress(text[half:].encode()))
    for name in ("plain.jsonl", "two.jsonl.gz"):
        digest, checked = check_file("events", str(tmp_path / name), WRITTEN)
        checked = list(checked)
        assert digest == landing.file_sha256(str(tmp_path / name))
        assert [(r.row_no, getattr(r.result, "reason", None)) for r in checked] == [
            (1, None), (2, None), (3, V.LINE_TOO_LONG), (4, None), (5, None)], name
        assert checked[2].raw is None and "longer than" in checked[2].result.detail
    # File-level problems are still found before any row is given.
    (tmp_path / "cut.jsonl.gz").write_bytes(gzip.compress(text.encode())[:-12])
    (tmp_path / "partial.jsonl").write_text(text + '{"event_id": "e9", "us')
    for name, reason in (("cut.jsonl.gz", V.TRUNCATED_FILE), ("partial.jsonl", V.TRUNCATED_FILE)):
        [row] = list(check_file("events", str(tmp_path / name), WRITTEN)[1])
        assert (row.row_no, row.result.reason) == (0, reason), name
    # A last line over the limit without a final newline is a long line, not a cut-off file.
    (tmp_path / "long-last.jsonl").write_text(json.dumps(rows[0]) + "\n" + json.dumps(rows[2]))
    assert [getattr(r.result, "reason", None) for r in check_file("events", str(tmp_path / "long-last.jsonl"))[1]] == [
        None, V.LINE_TOO_LONG]
