"""Row validation of landing records (DESIGN.md section 4), without Spark.

``validate_record`` turns one parsed record into either a row of the target
table or a ``Rejection`` with a reason code; the ingest stage writes rejections
to ``quarantine``. Keeping this pure Python makes every rule unit-testable.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from interestlake import constants as C

# Reason codes written to quarantine.reason.
INVALID_JSON = "invalid_json"
INVALID_ENCODING = "invalid_encoding"
MISSING_FIELD = "missing_field"
INVALID_TYPE = "invalid_type"
EMPTY_ID = "empty_id"
ID_TOO_LONG = "id_too_long"
UNKNOWN_EVENT_TYPE = "unknown_event_type"
INVALID_RATING = "invalid_rating"
INVALID_TIMESTAMP = "invalid_timestamp"
INVALID_PRICE = "invalid_price"
INVALID_ID = "invalid_id"
UNKNOWN_FORMAT = "unknown_format"
UNREADABLE_FILE = "unreadable_file"
TRUNCATED_FILE = "truncated_file"
EMPTY_FILE = "empty_file"
INVALID_CSV_ROW = "invalid_csv_row"
LINE_TOO_LONG = "line_too_long"
# Reasons that concern a whole file (row 0): nothing of such a file is ingested,
# and ingest retries it on a later run if its content changes.
FILE_REASONS = (UNKNOWN_FORMAT, UNREADABLE_FILE, TRUNCATED_FILE, EMPTY_FILE)

MAX_ID_LENGTH = 256
# Longer texts (review, query, description) are cut to this many characters and the
# row is flagged `truncated`: the encoder reads a few hundred tokens anyway, and one
# huge text must not blow up a partition.
MAX_TEXT_CHARS = 16_384
# Anything before the web existed, or more than a day after the file was written,
# is a unit or parsing mistake (a day allows for clock skew between producers).
_MIN_TS = datetime(1995, 1, 1, tzinfo=timezone.utc)
_MAX_TS = datetime(2100, 1, 1, tzinfo=timezone.utc)
FUTURE_TOLERANCE = timedelta(days=1)
# C0 control characters and DEL, except tab, newline and carriage return.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# The fields each kind reads; any other field of a record is ignored and counted
# (``unknown_fields``): producers add fields long before consumers use them.
KNOWN_FIELDS = {
    C.EVENTS: frozenset({C.COL_EVENT_ID, C.COL_USER_ID, C.COL_ITEM_ID, C.COL_EVENT_TYPE, C.COL_TS, C.COL_TEXT, C.COL_RATING}),
    C.REVIEWS: frozenset({C.COL_REVIEW_ID, C.COL_USER_ID, C.COL_ITEM_ID, C.COL_RATING, C.COL_TEXT, C.COL_TS}),
    C.ITEMS: frozenset({C.COL_ITEM_ID, C.COL_TITLE, C.COL_DESCRIPTION, C.COL_CATEGORY, C.COL_PRICE, C.COL_UPDATED_AT}),
}
# A field name reported in the run's counts is cut to this length (names, never values, are reported).
MAX_FIELD_NAME_CHARS = 64


@dataclass(frozen=True)
class Rejection:
    """Why a record cannot be accepted."""

    reason: str
    detail: str


class _Reject(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.rejection = Rejection(reason, detail)


def validate_record(kind: str, record: Any, written_at: datetime | None = None) -> dict[str, Any] | Rejection:
    """Validates one landing record of a kind (events, reviews or items).

    Args:
        kind: Landing kind: ``events``, ``reviews`` or ``items``.
        record: The parsed record (a mapping of field name to value).
        written_at: When the record's file was written (its modification time);
            timestamps more than a day later are rejected. Default: now. Ingest
            passes the file's time, so a re-read of the file decides the same way.

    Returns:
        The typed row (column name -> value, timestamps as naive UTC datetimes,
        ``truncated`` True when a text was cut to ``MAX_TEXT_CHARS``) or a
        ``Rejection`` naming the reason and the offending field (never its text).
    """
    if not isinstance(record, dict):
        return Rejection(INVALID_JSON, f"expected a JSON object, got {type(record).__name__}")
    try:
        validator = _VALIDATORS[kind]
    except KeyError:
        raise ValueError(f"unknown landing kind {kind!r}; expected one of {C.LANDING_KINDS}") from None
    latest = (written_at or datetime.now(timezone.utc)) + FUTURE_TOLERANCE
    row = _Row(record, latest if latest.tzinfo else latest.replace(tzinfo=timezone.utc))
    try:
        typed = validator(row)
    except _Reject as rejected:
        return rejected.rejection
    typed[C.COL_TRUNCATED] = row.truncated
    return typed


class _Row:
    """One record being validated: its fields, the latest acceptable time, and whether a text was cut."""

    def __init__(self, record: dict, latest: datetime):
        self.record = record
        self.latest = latest
        self.truncated = False

    def get(self, name: str) -> Any:
        return self.record.get(name)

    def __contains__(self, name: str) -> bool:
        return name in self.record

    def text(self, name: str, required: bool = False) -> str | None:
        """A free text: control characters removed, cut to MAX_TEXT_CHARS; blank is None."""
        value = _required_str(self, name) if required else _optional_str(self, name)
        if value is None:
            return None
        value = _CONTROL.sub("", value)
        if not value.strip():
            return None
        if len(value) > MAX_TEXT_CHARS:
            self.truncated = True
            value = value[:MAX_TEXT_CHARS]
        return value


def _event(record: _Row) -> dict[str, Any]:
    event_type = _required_str(record, C.COL_EVENT_TYPE).lower()
    if event_type not in C.EVENT_TYPES:
        raise _Reject(UNKNOWN_EVENT_TYPE, f"event_type {_cap(event_type)!r} is not one of {list(C.EVENT_TYPES)}")
    item_id = _id(record, C.COL_ITEM_ID, required=event_type != C.EVENT_SEARCH)
    rating = _rating(record, required=event_type == C.EVENT_RATE)
    text = record.text(C.COL_TEXT)
    if event_type == C.EVENT_SEARCH and text is None:
        raise _Reject(MISSING_FIELD, "search events need a non-empty text (the query)")
    return {
        C.COL_EVENT_ID: _id(record, C.COL_EVENT_ID),
        C.COL_USER_ID: _id(record, C.COL_USER_ID),
        C.COL_ITEM_ID: item_id,
        C.COL_EVENT_TYPE: event_type,
        C.COL_TS: _timestamp(record, C.COL_TS, required=True),
        C.COL_TEXT: text,
        C.COL_RATING: rating,
    }


def _review(record: _Row) -> dict[str, Any]:
    return {
        C.COL_REVIEW_ID: _id(record, C.COL_REVIEW_ID),
        C.COL_USER_ID: _id(record, C.COL_USER_ID),
        C.COL_ITEM_ID: _id(record, C.COL_ITEM_ID),
        C.COL_RATING: _rating(record, required=True),
        # A review without text still carries its rating; its text is null.
        C.COL_TEXT: record.text(C.COL_TEXT),
        C.COL_TS: _timestamp(record, C.COL_TS, required=True),
    }


def _item(record: _Row) -> dict[str, Any]:
    price = _optional_number(record, C.COL_PRICE)
    if price is not None and price < 0:
        raise _Reject(INVALID_PRICE, f"price must be >= 0, got {price}")
    title = record.text(C.COL_TITLE, required=True)
    if title is None:
        raise _Reject(MISSING_FIELD, "title is empty")
    return {
        C.COL_ITEM_ID: _id(record, C.COL_ITEM_ID),
        C.COL_TITLE: title.strip(),
        C.COL_DESCRIPTION: record.text(C.COL_DESCRIPTION),
        C.COL_CATEGORY: record.text(C.COL_CATEGORY),
        C.COL_PRICE: price,
        C.COL_UPDATED_AT: _timestamp(record, C.COL_UPDATED_AT, required=False),
    }


_VALIDATORS = {C.EVENTS: _event, C.REVIEWS: _review, C.ITEMS: _item}


def unknown_fields(kind: str, record: Any) -> list[str]:
    """Names of the fields of a record that ``kind`` does not read, sorted, cut and made printable.

    Only names are returned: a count per name is safe to log and store, a value is not.
    """
    if not isinstance(record, dict):
        return []
    known = KNOWN_FIELDS[kind]
    names = {_CONTROL.sub("?", str(name))[:MAX_FIELD_NAME_CHARS] for name in record if name not in known}
    return sorted(names)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _id(record: _Row, name: str, required: bool = True) -> str | None:
    value = _as_text_or_number(record.get(name))
    if _missing(value) or (isinstance(value, str) and not value.strip()):
        if not required:
            return None
        if _missing(value) and name not in record:
            raise _Reject(MISSING_FIELD, f"{name} is missing")
        raise _Reject(EMPTY_ID, f"{name} is empty")
    # Numeric ids (MovieLens, CSV) are fine as long as they are whole numbers.
    if isinstance(value, bool):
        raise _Reject(INVALID_TYPE, f"{name} must be a string or integer, got a boolean")
    if isinstance(value, (float, Decimal)):
        # 42.0 (a column turned float, a Parquet decimal) is the id 42; 42.5 is no id.
        if not math.isfinite(value) or value != int(value):
            raise _Reject(INVALID_TYPE, f"{name} must be a string or integer, got {value!r}")
        value = int(value)
    if not isinstance(value, (str, int)):
        raise _Reject(INVALID_TYPE, f"{name} must be a string or integer, got {type(value).__name__}")
    text = str(value).strip()
    if len(text) > MAX_ID_LENGTH:
        raise _Reject(ID_TOO_LONG, f"{name} is {len(text)} characters, the limit is {MAX_ID_LENGTH}")
    if _CONTROL.search(text) or "\n" in text or "\r" in text or "\t" in text:
        raise _Reject(INVALID_ID, f"{name} contains NUL or other control characters")
    return text


def _cap(value: str, limit: int = 40) -> str:
    """A value quoted in a message, shortened: details are for people, not a copy of the row."""
    return value if len(value) <= limit else value[:limit] + "..."


def _as_text_or_number(value: Any) -> Any:
    """Bytes (a Parquet ``binary`` column) as UTF-8 text; anything else as it is."""
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise _Reject(INVALID_ENCODING, "a binary value that is not UTF-8 text") from None
    return value


def _coerced_str(name: str, value: Any) -> str:
    """A text field's value as text: numbers (a column whose type changed) become their digits."""
    value = _as_text_or_number(value)
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float, Decimal)) and not isinstance(value, bool) and math.isfinite(value):
        # 1984.0 from a column turned float is the title "1984", not "1984.0".
        return str(int(value)) if value == int(value) and abs(value) < 2**63 else str(value)
    raise _Reject(INVALID_TYPE, f"{name} must be a string, got {type(value).__name__}")


def _required_str(record: _Row, name: str) -> str:
    value = record.get(name)
    if _missing(value):
        raise _Reject(MISSING_FIELD, f"{name} is missing")
    return _coerced_str(name, value).strip()


def _optional_str(record: _Row, name: str) -> str | None:
    value = record.get(name)
    if _missing(value):
        return None
    return _coerced_str(name, value)


def _optional_number(record: _Row, name: str) -> float | None:
    value = record.get(name)
    if _missing(value) or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise _Reject(INVALID_TYPE if name != C.COL_PRICE else INVALID_PRICE, f"{name} must be a number, got a boolean")
    value = _as_text_or_number(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        reason = INVALID_PRICE if name == C.COL_PRICE else INVALID_TYPE
        raise _Reject(reason, f"{name} must be a number, got {_cap(str(value))!r}") from None
    if not math.isfinite(number):
        raise _Reject(INVALID_PRICE if name == C.COL_PRICE else INVALID_TYPE, f"{name} must be finite, got {value!r}")
    return number


def _rating(record: _Row, required: bool) -> float | None:
    value = record.get(C.COL_RATING)
    if _missing(value) or (isinstance(value, str) and not value.strip()):
        if required:
            raise _Reject(MISSING_FIELD if C.COL_RATING not in record else INVALID_RATING, "rating is missing")
        return None
    try:
        rating = _optional_number(record, C.COL_RATING)
    except _Reject:
        raise _Reject(
            INVALID_RATING, f"rating must be a number from {C.RATING_MIN} to {C.RATING_MAX}, got {_cap(str(value))!r}"
        ) from None
    if rating is None or not C.RATING_MIN <= rating <= C.RATING_MAX:
        raise _Reject(INVALID_RATING, f"rating must be from {C.RATING_MIN} to {C.RATING_MAX}, got {_cap(str(value))!r}")
    return rating


def parse_timestamp(value: Any, latest: datetime = _MAX_TS) -> datetime:
    """Parses ISO-8601 text or epoch seconds into an aware UTC datetime.

    Args:
        value: The field's value.
        latest: Times at or after this are rejected (at most 2100).

    Raises:
        ValueError: When the value is neither, or outside 1995..``latest``.
    """
    if isinstance(value, bool):
        raise ValueError("a boolean is not a timestamp")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} is not a timestamp")
        parsed = datetime.fromtimestamp(value, tz=timezone.utc)
    elif isinstance(value, datetime):
        parsed = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    elif isinstance(value, date):
        # A Parquet column turned `date`: midnight UTC of that day.
        parsed = datetime(value.year, value.month, value.day, tzinfo=timezone.utc)
    elif isinstance(value, Decimal):
        return parse_timestamp(float(value), latest)
    elif isinstance(value, str):
        text = value.strip()
        try:
            parsed = datetime.fromtimestamp(float(text), tz=timezone.utc)
        except ValueError:
            try:
                parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
            except ValueError:
                raise ValueError(f"{_cap(value)!r} is neither ISO-8601 nor epoch seconds") from None
        except OverflowError:
            raise ValueError(f"{value!r} is out of range") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone.utc)
    else:
        raise ValueError(f"expected ISO-8601 text or epoch seconds, got {type(value).__name__}")
    if not _MIN_TS <= parsed < _MAX_TS:
        raise ValueError(f"{value!r} is outside {_MIN_TS.year}..{_MAX_TS.year} (epoch milliseconds instead of seconds?)")
    if parsed >= latest:
        raise ValueError(f"{value!r} is more than a day after its file was written ({latest - FUTURE_TOLERANCE:%Y-%m-%dT%H:%M:%SZ})")
    return parsed.astimezone(timezone.utc)


def _timestamp(record: _Row, name: str, required: bool) -> datetime | None:
    value = record.get(name)
    if _missing(value) or (isinstance(value, str) and not value.strip()):
        if required:
            raise _Reject(MISSING_FIELD, f"{name} is missing")
        return None
    try:
        return parse_timestamp(value, min(record.latest, _MAX_TS)).replace(tzinfo=None)
    except (ValueError, OverflowError, OSError) as exc:
        raise _Reject(INVALID_TIMESTAMP, f"{name}: {exc}") from None
