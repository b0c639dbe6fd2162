"""One landing folder holding every kind of bad and drifting input we know of, with what must happen to it.

Shared by the unit test (the reader and rules, no Spark) and the Spark ingest test (what
lands in the tables): each bad case is one quarantine row with its reason; every valid row,
drifted or not, lands exactly once.
"""

from __future__ import annotations

import codecs
import gzip
import json
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path


@dataclass(frozen=True)
class BadCase:
    """One kind of bad input: where it is and the quarantine reason it must get (row 0: the whole file)."""

    label: str
    kind: str
    file: str
    row_no: int
    reason: str


@dataclass
class MixedLanding:
    """What ``write_mixed_landing`` wrote: the bad cases, the keys that must land, and the notes counted."""

    cases: list[BadCase] = field(default_factory=list)
    keys: dict[str, set[str]] = field(default_factory=lambda: {"events": set(), "reviews": set(), "items": set()})
    # Rows of the kind that are valid but repeat a key (in a file or across files).
    duplicates: dict[str, int] = field(default_factory=lambda: {"events": 0, "reviews": 0, "items": 0})
    notes: dict[str, dict[str, int]] = field(default_factory=lambda: {"events": {}, "reviews": {}, "items": {}})
    # Texts that must land decoded exactly so (key -> text).
    texts: dict[str, str] = field(default_factory=dict)

    def quarantined(self) -> list[tuple[str, str, int, str]]:
        return sorted((c.kind, c.file, c.row_no, c.reason) for c in self.cases)

    def note(self, kind: str, *notes: str, rows: int = 1) -> None:
        for name in notes:
            self.notes[kind][name] = self.notes[kind].get(name, 0) + rows


TS = "2026-10-01T12:00:00Z"


def _event(eid, user="u1", item="i1", kind="view", **extra):
    return {"event_id": eid, "user_id": user, "item_id": item, "event_type": kind, "ts": TS, **extra}


def _jsonl(rows) -> bytes:
    return b"".join((r if isinstance(r, bytes) else json.dumps(r, ensure_ascii=False).encode()) + b"\n" for r in rows)


def write_mixed_landing(landing: Path) -> MixedLanding:
    """Writes the mixed set under ``landing/{events,reviews,items}`` and returns what must happen to it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = MixedLanding()
    for kind in ("events", "reviews", "items"):
        (landing / kind).mkdir(parents=True, exist_ok=True)

    def bad(label, kind, file, row_no, reason):
        out.cases.append(BadCase(label, kind, file, row_no, reason))

    # -- items: JSON Lines with a UTF-8 byte-order mark (it used to break the first line) ------
    items = [
        ({"item_id": "i1", "title": "Kettle", "price": "12.50", "colour": "red"}, None),  # numeric string price
        ({"item_id": 42, "title": 1984, "category": "books"}, None),                      # number id, number title
        ({"item_id": "i3", "title": "Mug", "price": -1}, "invalid_price"),
        ({"item_id": "i4", "title": "Pan", "price": "twelve"}, "invalid_price"),
        ({"item_id": "i5", "description": "no title"}, "missing_field"),
        ({"item_id": "i6", "title": "\x00\x01"}, "missing_field"),
        ({"item_id": "i7", "title": "Lamp", "updated_at": "last tuesday"}, "invalid_timestamp"),
    ]
    (landing / "items" / "catalog.jsonl").write_bytes(codecs.BOM_UTF8 + _jsonl([row for row, _ in items]))
    labels = ["negative price", "price not a number", "item without title", "title of control characters only",
              "updated_at not a time"]
    for row_no, (row, reason) in enumerate(items, start=1):
        if reason:
            bad(labels.pop(0), "items", "catalog.jsonl", row_no, reason)
        else:
            out.keys["items"].add(str(row["item_id"]))
    out.note("items", "unknown_fields", "unknown_field.colour")

    # -- events: JSON Lines, UTF-8 with multi-byte text and some broken lines -------------------
    lines: list[tuple[object, str | None, str | None]] = [
        (_event("e1", kind="search", item=None, text="咖啡 ☕ kettle"), None, None),
        (_event(1001, session="s-9", device="phone"), None, None),               # number id, two unknown fields
        (_event("e2", kind="rate", rating="4"), None, None),                      # numeric string rating
        ({**_event("e3"), "ts": "1790000000"}, None, None),                       # numeric string epoch time
        (_event("e1", item="i3"), None, None),                                    # duplicate key: counted, not bad
        (b'{"event_id": "e-json", "user_id": "u1"', "invalid_json", "broken JSON"),
        (b"[1, 2]", "invalid_json", "an array instead of an object"),
        (b"42", "invalid_json", "a number instead of an object"),
        (_event("e-list", item=["i1"]), "invalid_type", "item_id is a list"),
        ({k: v for k, v in _event("e-miss").items() if k != "user_id"}, "missing_field", "user_id missing"),
        (_event("   "), "empty_id", "blank event_id"),
        (_event("x" * 300), "id_too_long", "event_id over 256 characters"),
        (_event("e-kind", kind="teleport"), "unknown_event_type", "unknown event type"),
        (_event("e-r7", kind="rate", rating=7), "invalid_rating", "rating out of range"),
        (_event("e-rtxt", kind="rate", rating="great"), "invalid_rating", "rating not a number"),
        (_event("e-rnone", kind="rate"), "missing_field", "rate without rating"),
        ({**_event("e-ts"), "ts": "yesterday"}, "invalid_timestamp", "time not a time"),
        ({**_event("e-old"), "ts": "1990-01-01T00:00:00Z"}, "invalid_timestamp", "time before 1995"),
        ({**_event("e-ms"), "ts": 1790000000000}, "invalid_timestamp", "epoch milliseconds"),
        ({**_event("e-bool-ts"), "ts": True}, "invalid_timestamp", "time a boolean"),
        (_event("e-nul", user="u\u00001"), "invalid_id", "NUL in user_id"),
        (_event("e-blank", kind="search", item=None, text="   "), "missing_field", "blank search"),
        (_event(True), "invalid_type", "boolean event_id"),
        (_event(1.5), "invalid_type", "fractional number id"),
        (_event("e-obj", kind="search", item=None, text={"q": "kettle"}), "invalid_type", "text an object"),
        (b'{"event_id": "e-bytes", "user_id": "\xff\xfe"}', "invalid_encoding", "broken UTF-8 in a line"),
        (b'{"event_id": "e-nan", "user_id": "u1", "item_id": "i1", "event_type": "rate", "ts": "' + TS.encode()
         + b'", "rating": NaN}', "invalid_rating", "rating NaN"),
    ]
    (landing / "events" / "mixed.jsonl").write_bytes(_jsonl([row for row, _, _ in lines]))
    for row_no, (row, reason, label) in enumerate(lines, start=1):
        if reason:
            bad(label, "events", "mixed.jsonl", row_no, reason)
        elif str(row["event_id"]) in out.keys["events"]:
            out.duplicates["events"] += 1
        else:
            out.keys["events"].add(str(row["event_id"]))
    out.texts["e1"] = "咖啡 ☕ kettle"
    out.note("events", "unknown_fields", "unknown_field.device", "unknown_field.session")

    # -- events in other encodings: decoded, counted ----------------------------------------------
    latin = [_event("e-latin", kind="search", item=None, text="café crème brûlée")]
    (landing / "events" / "latin1.jsonl").write_bytes(_jsonl(latin).decode("utf-8").encode("cp1252"))
    out.keys["events"].add("e-latin")
    out.texts["e-latin"] = "café crème brûlée"
    out.note("events", "decoded_cp1252")
    utf16 = [_event("e-utf16", kind="search", item=None, text="naïve Ünïcödé 日本")]
    (landing / "events" / "utf16.jsonl").write_bytes(_jsonl(utf16).decode("utf-8").encode("utf-16"))  # with BOM
    out.keys["events"].add("e-utf16")
    out.texts["e-utf16"] = "naïve Ünïcödé 日本"
    out.note("events", "decoded_utf-16")

    # -- events: Parquet whose column types changed (ids as numbers, times as text, ratings as text)
    drifted = pa.table({
        "event_id": pa.array([2001, 2002, 2003, 2004], pa.int64()),
        "user_id": pa.array([b"u1", b"u2", b"\xff", b"u4"], pa.binary()),
        "item_id": pa.array([7.0, 8.0, 9.0, 3.5], pa.float64()),
        "event_type": ["rate", "rate", "view", "view"],
        "ts": [TS, "1790000000", TS, TS],
        "rating": pa.array(["5", "n/a", None, None], pa.string()),
        "price_seen": pa.array([Decimal("1.50"), Decimal("2.00"), None, None], pa.decimal128(5, 2)),
    })
    pq.write_table(drifted, landing / "events" / "drifted.parquet")
    out.keys["events"].add("2001")
    bad("Parquet rating text not a number", "events", "drifted.parquet", 2, "invalid_rating")
    bad("Parquet binary user_id not UTF-8", "events", "drifted.parquet", 3, "invalid_encoding")
    bad("Parquet item_id float with a fraction", "events", "drifted.parquet", 4, "invalid_type")
    out.note("events", "unknown_fields", "unknown_field.price_seen", rows=4)

    # -- events: whole files that cannot land (row 0, held) ---------------------------------------
    whole = {
        "notes.xml": (b"<events/>", "unknown_format", "unknown extension"),
        "blank.jsonl": (b"\n  \n", "empty_file", "only blank lines"),
        "corrupt.jsonl.gz": (b"\x1f\x8b\x08\x00" + bytes(range(256)) * 2, "unreadable_file", "corrupt gzip"),
        "cut.jsonl.gz": (gzip.compress(_jsonl([_event("e-cut")]) * 40)[:-9], "truncated_file", "gzip cut short"),
        "partial.jsonl": (_jsonl([_event("e-part")]) + b'{"event_id": "e-p2", "us', "truncated_file", "last line cut"),
        "picture.jsonl": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)), "unknown_format", "binary content"),
        "utf16-no-bom.jsonl": (_jsonl([_event("e-nobom")]).decode().encode("utf-16-le"), "unknown_format",
                               "UTF-16 without a byte-order mark"),
        "bad-bom.jsonl": (codecs.BOM_UTF16_LE + b"{\x00\x00\xd8", "invalid_encoding", "UTF-16 mark, broken UTF-16"),
        "half.parquet": (b"PAR1" + bytes(range(40)), "unreadable_file", "Parquet without a footer"),
        "empty.json": (b"[]", "empty_file", "an empty JSON array"),
    }
    for name, (data, reason, label) in whole.items():
        (landing / "events" / name).write_bytes(data)
        bad(label, "events", name, 0, reason)

    # -- reviews: CSV with reordered and extra columns, misaligned rows ---------------------------
    csv_rows = [
        "ts,rating,text,item_id,user_id,review_id,helpful_votes",
        f"{TS},4.0,Lovely kettle,i1,u1,r1,3",
        f"{TS},5,Good,i1,u2,r2,0,extra cell",
        f"{TS},5,Short row,i1",
        f"{TS},five,Hmm,i1,u3,r4,1",
        f"{TS},0,Zero,i1,u3,r5,1",
        f"{TS},3,,i1,u4,r6,",
        "",
        f"{TS},2,Again,i1,u1,r1,1",
    ]
    (landing / "reviews" / "reviews.csv").write_text("\n".join(csv_rows) + "\n")
    bad("CSV row with an extra cell", "reviews", "reviews.csv", 2, "invalid_csv_row")
    bad("CSV row missing cells", "reviews", "reviews.csv", 3, "invalid_csv_row")
    bad("review rating a word", "reviews", "reviews.csv", 4, "invalid_rating")
    bad("review rating 0", "reviews", "reviews.csv", 5, "invalid_rating")
    out.keys["reviews"] |= {"r1", "r6"}
    out.duplicates["reviews"] += 1
    # Every row of the file carries the unknown column, bad rows included (but not the misaligned ones).
    out.note("reviews", "unknown_fields", "unknown_field.helpful_votes", rows=5)
    (landing / "reviews" / "header.csv").write_text(csv_rows[0] + "\n")
    bad("CSV with only a header", "reviews", "header.csv", 0, "empty_file")
    return out
