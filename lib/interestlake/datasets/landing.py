"""Reading landing files: JSON Lines / JSON / CSV (optionally gzipped) and Parquet.

Files are read on executors, one task per file, so every row keeps its source
file and line number for ``quarantine``, and a file that cannot be read costs
one quarantine row instead of the run.
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import gzip
import io
import json
import os
import re
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from datetime import datetime, timezone
from typing import Any

from interestlake.datasets import validation as V
from interestlake.lake.uris import readable_uri

# Extension (after an optional .gz) -> reader name.
_FORMATS = {".jsonl": "json", ".ndjson": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
RAW_LIMIT = 4096
# How much of a text file is looked at for binary content.
_SNIFF_BYTES = 4096


@dataclass(frozen=True)
class LandingFile:
    """One file found under a landing folder."""

    path: str
    size: int
    mtime: datetime | None


@dataclass(frozen=True)
class LandingRecord:
    """One row read from a landing file: a parsed record or why it could not be parsed."""

    row_no: int
    raw: str | None
    record: Any = None
    rejection: V.Rejection | None = None
    # What the run's counts should say about the row (see ``CheckedRow.notes``).
    notes: tuple[str, ...] = ()


def list_landing_files(landing_uri: str, kind: str) -> list[LandingFile]:
    """Lists the files of one landing kind, oldest name first; hidden files are skipped.

    Args:
        landing_uri: The landing root (local path or object-store URI).
        kind: Sub-folder: ``events``, ``reviews`` or ``items``.

    Returns:
        The files, or an empty list when the folder does not exist.
    """
    import pyarrow.fs as pafs

    fs, base = pafs.FileSystem.from_uri(f"{landing_uri.rstrip('/')}/{kind}")
    if fs.get_file_info(base).type == pafs.FileType.NotFound:
        return []
    found = []
    for info in fs.get_file_info(pafs.FileSelector(base, recursive=True)):
        relative = info.path[len(base) :].lstrip("/")
        if not info.is_file or any(part.startswith((".", "_")) for part in relative.split("/")):
            continue
        mtime = info.mtime.astimezone(timezone.utc) if info.mtime else None
        found.append(LandingFile(_uri(landing_uri, info.path), info.size, mtime))
    return sorted(found, key=lambda f: f.path)


def landing_folder_exists(uri: str) -> bool:
    """True when a landing folder exists (a missing one simply has nothing to ingest)."""
    import pyarrow.fs as pafs

    fs, path = pafs.FileSystem.from_uri(readable_uri(uri))
    return fs.get_file_info(path).type == pafs.FileType.Directory


def _uri(landing_uri: str, path: str) -> str:
    scheme = landing_uri.split("://", 1)[0] + "://" if "://" in landing_uri else ""
    return f"{scheme}{path}" if scheme and not path.startswith(scheme) else path


def file_format(path: str) -> str | None:
    """Reader for a file name (``json``, ``csv``, ``parquet``), None if unknown."""
    name = path.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    for extension, reader in _FORMATS.items():
        if name.endswith(extension):
            return reader
    return None


@dataclass(frozen=True)
class FileContent:
    """The bytes of one landing file as stored, or why they could not be read."""

    data: bytes | None
    content_hash: str | None
    rejection: V.Rejection | None = None


def read_file(path: str) -> FileContent:
    """Reads a landing file's bytes and their SHA-256 (of the stored, possibly gzipped, bytes).

    The hash is what ingest compares to decide whether a held file changed.
    """
    import hashlib

    import pyarrow.fs as pafs

    fs, local = pafs.FileSystem.from_uri(readable_uri(path))
    try:
        # compression=None: the stored bytes are hashed, and a corrupt gzip must reach our handler.
        with fs.open_input_stream(local, compression=None) as stream:
            data = stream.read()
    except OSError as exc:
        return FileContent(None, None, V.Rejection(V.UNREADABLE_FILE, f"cannot read the file: {type(exc).__name__}"))
    return FileContent(data, hashlib.sha256(data).hexdigest())


@dataclass(frozen=True)
class CheckedRow:
    """One row of a landing file after validation: the typed row, or why it was rejected."""

    row_no: int
    raw: str | None
    record: Any
    result: dict[str, Any] | V.Rejection
    # Counted per kind in the run's counts (``<kind>_<note>``): ``decoded_<encoding>`` for a row of
    # a file that was not UTF-8, ``unknown_fields`` and ``unknown_field.<name>`` for fields the kind
    # does not read. Names only, never values.
    notes: tuple[str, ...] = ()


def check_file(kind: str, path: str, written_at: datetime | None = None) -> tuple[str, Iterator[CheckedRow]]:
    """Reads and validates every row of one landing file; never raises for what the file holds.

    Whatever breaks while parsing (a bug, an exotic file) becomes one row-0
    ``unreadable_file`` rejection naming only the error type: the message could
    quote the file's content.

    JSON Lines files in UTF-8 (or Windows-1252) are read as a stream, twice: a first
    pass hashes the stored bytes and looks for file-level problems, a second yields the
    rows one by one, so memory follows the longest line (at most ``MAX_LINE_BYTES``; a
    longer one is rejected as ``line_too_long`` without being held), not the file. Other
    files (CSV, Parquet, a JSON array, UTF-16/32 text) are read whole.

    Args:
        kind: Landing kind of the file.
        path: The file.
        written_at: The file's modification time (see ``validation.validate_record``).

    Returns:
        The SHA-256 of the file's stored bytes and its rows, lazily; a file-level problem
        is one row 0 and nothing else.
    """
    try:
        survey = survey_json_lines(path) if file_format(path) == "json" else None
        if survey is not None and survey.rejection is not None:
            return survey.content_hash, iter([CheckedRow(0, None, None, survey.rejection)])
        if survey is not None and survey.streamable:
            return survey.content_hash, _checked(kind, path, written_at, _streamed_json_lines(path, survey))
        content = read_file(path)
        records = list(read_records(path, content))
        return content.content_hash or _sha256_or_placeholder(path), _checked(kind, path, written_at, iter(records))
    except Exception as exc:  # noqa: BLE001 - one file must not fail a run, whatever broke
        return _sha256_or_placeholder(path), iter([_unreadable(exc)])


def _unreadable(exc: Exception) -> CheckedRow:
    rejection = V.Rejection(V.UNREADABLE_FILE, f"the file could not be parsed ({type(exc).__name__})")
    return CheckedRow(0, None, None, rejection)


def _checked(kind: str, path: str, written_at: datetime | None, records: Iterator[LandingRecord]) -> Iterator[CheckedRow]:
    try:
        for r in records:
            yield CheckedRow(r.row_no, r.raw, r.record, r.rejection or V.validate_record(kind, r.record, written_at),
                             r.notes + _unknown_field_notes(kind, r.record))
    except Exception as exc:  # noqa: BLE001 - see check_file
        yield _unreadable(exc)


def _unknown_field_notes(kind: str, record: Any) -> tuple[str, ...]:
    names = V.unknown_fields(kind, record)
    return ("unknown_fields", *(f"unknown_field.{name}" for name in names)) if names else ()


def _sha256_or_placeholder(path: str) -> str:
    try:
        return file_sha256(path)
    except OSError:
        # Unreadable now: a placeholder keeps the file held until it can be read.
        return "unreadable"


def stat_file(path: str) -> LandingFile | None:
    """Size and modification time (UTC, whole milliseconds as Spark reports them) of a file; None if gone."""
    import pyarrow.fs as pafs

    fs, local = pafs.FileSystem.from_uri(readable_uri(path))
    info = fs.get_file_info(local)
    if info.type != pafs.FileType.File:
        return None
    mtime = info.mtime.astimezone(timezone.utc) if info.mtime else None
    if mtime is not None:
        mtime = mtime.replace(microsecond=mtime.microsecond // 1000 * 1000)
    return LandingFile(path, info.size, mtime)


def file_sha256(path: str, chunk_bytes: int = 1 << 20) -> str:
    """SHA-256 of a file's stored bytes, read in chunks (memory does not follow the file's size)."""
    import hashlib

    import pyarrow.fs as pafs

    fs, local = pafs.FileSystem.from_uri(readable_uri(path))
    digest = hashlib.sha256()
    with fs.open_input_stream(local, compression=None) as stream:
        while chunk := stream.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def read_records(path: str, content: FileContent | None = None) -> Iterator[LandingRecord]:
    """Yields every row of one landing file; unreadable parts become rejections.

    Row numbers are 1-based lines (JSON Lines), data rows (CSV) or row indices
    (Parquet, JSON arrays). A problem of the whole file (unknown format, corrupt
    or truncated gzip, a half-written last line, no rows at all) is ONE rejection
    on row 0 and nothing else of the file is yielded: a half-written file lands
    whole, later, or not at all.

    Args:
        path: The file.
        content: Its bytes when already read (``read_file``).
    """
    reader = file_format(path)
    if reader is None:
        yield LandingRecord(0, None, rejection=V.Rejection(V.UNKNOWN_FORMAT, f"unknown file type: {path.rsplit('/', 1)[-1]}"))
        return
    content = content or read_file(path)
    if content.rejection is not None:
        yield LandingRecord(0, None, rejection=content.rejection)
        return
    data = content.data
    if path.lower().endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except EOFError as exc:
            yield LandingRecord(0, None, rejection=V.Rejection(V.TRUNCATED_FILE, f"gzip stream ends early: {exc}"))
            return
        except (OSError, zlib.error) as exc:
            yield LandingRecord(0, None, rejection=V.Rejection(V.UNREADABLE_FILE, f"corrupt gzip: {type(exc).__name__}: {exc}"))
            return
    if not data.strip():
        yield LandingRecord(0, None, rejection=V.Rejection(V.EMPTY_FILE, "the file has no rows"))
        return
    notes: tuple[str, ...] = ()
    if reader != "parquet":
        data, encoding, rejection = as_utf8(data)
        notes = (f"decoded_{encoding}",) if encoding else ()
        if rejection is None and b"\x00" in data[:_SNIFF_BYTES]:
            # NUL bytes near the start: a binary file (image, archive) under a text name,
            # or UTF-16/32 text without the byte-order mark that would say so.
            detail = f"binary content in a {reader} file (or UTF-16/UTF-32 text without a byte-order mark)"
            rejection = V.Rejection(V.UNKNOWN_FORMAT, detail)
        if rejection is not None:
            yield LandingRecord(0, None, rejection=rejection)
            return
    parse = {"parquet": _parquet_records, "csv": _csv_records, "json": _json_records}[reader]
    empty = True
    for record in parse(data):
        empty = False
        yield dataclasses.replace(record, notes=notes) if notes else record
    if empty:
        # A header, an empty array or a Parquet file without rows.
        yield LandingRecord(0, None, rejection=V.Rejection(V.EMPTY_FILE, "the file has no rows"))


# Byte-order marks, longest first (the UTF-32 LE mark starts with the UTF-16 LE one).
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"),
)
# A well-formed multi-byte UTF-8 sequence: a file holding one is UTF-8 with some broken bytes,
# not text in a one-byte legacy encoding (whose accented letters are single bytes >= 0x80).
_UTF8_MULTIBYTE = re.compile(rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3}")
LEGACY_ENCODING = "cp1252"
_HIGH_BYTES = re.compile(rb"[\x80-\xff]+")
# Windows-1252 punctuation that stands between words: € ‚ „ … ‹ ‘ ’ “ ” • – — ›, no-break space, « ° ».
_LEGACY_PUNCTUATION = frozenset(b"\x80\x82\x84\x85\x8b\x91\x92\x93\x94\x95\x96\x97\x9b\xa0\xab\xb0\xbb")


def as_utf8(data: bytes) -> tuple[bytes, str | None, V.Rejection | None]:
    """The bytes of a text file as UTF-8, the encoding they were decoded from, or why they cannot be.

    The encoding is None for UTF-8 (with or without a byte-order mark), else ``utf-16``,
    ``utf-32`` or ``cp1252``:

    - A byte-order mark decides: UTF-8, UTF-16 or UTF-32 (LE or BE) text is decoded as such;
      one that does not decode holds the file (``invalid_encoding``).
    - Valid UTF-8 is taken as it is.
    - Not UTF-8, without any multi-byte UTF-8 sequence, and every non-ASCII byte part of a
      word (touching a letter or digit) or Windows-1252 punctuation: text in a one-byte
      legacy encoding, decoded as Windows-1252 (a superset of Latin-1's printable
      characters; the five bytes it leaves undefined are read as Latin-1).
    - Otherwise (UTF-8 with some broken bytes, stray binary bytes) the bytes are returned as
      they are: only the rows holding broken bytes are rejected, each with ``invalid_encoding``.
    """
    for bom, codec in _BOMS:
        if data.startswith(bom):
            name = codec.removesuffix("-sig")
            try:
                text = data.decode(codec)
            except UnicodeDecodeError as exc:
                detail = f"starts with a {name.upper()} byte-order mark but is not {name.upper()}: {exc.reason} at byte {exc.start}"
                return data, None, V.Rejection(V.INVALID_ENCODING, detail)
            return text.encode("utf-8"), (None if name == "utf-8" else name), None
    if _is_utf8(data) or _UTF8_MULTIBYTE.search(data) or not _looks_like_legacy_text(data):
        return data, None, None
    return data.decode(LEGACY_ENCODING, errors="legacy_latin1").encode("utf-8"), LEGACY_ENCODING, None


def _looks_like_legacy_text(data: bytes) -> bool:
    """True when every run of non-ASCII bytes touches an ASCII letter or digit (é in "café")
    or is Windows-1252 punctuation ("–" between spaces): accented words, not stray bytes."""
    for run in _HIGH_BYTES.finditer(data):
        before, after = data[run.start() - 1 : run.start()], data[run.end() : run.end() + 1]
        if not (before.isalnum() or after.isalnum() or all(b in _LEGACY_PUNCTUATION for b in run.group())):
            return False
    return True


def _is_utf8(data: bytes, chunk_bytes: int = 1 << 20) -> bool:
    """True when the bytes are valid UTF-8; decoded chunk by chunk, so no copy of a huge file is made."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        for start in range(0, len(data), chunk_bytes):
            decoder.decode(data[start : start + chunk_bytes])
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def _latin1_fallback(error: UnicodeDecodeError) -> tuple[str, int]:
    # The bytes Windows-1252 leaves undefined (0x81, 0x8D, 0x8F, 0x90, 0x9D) read as Latin-1.
    return error.object[error.start : error.end].decode("latin-1"), error.end


codecs.register_error("legacy_latin1", _latin1_fallback)


def _json_records(data: bytes) -> Iterator[LandingRecord]:
    if data.lstrip()[:1] == b"[":
        # A .json file holding one array of objects.
        try:
            rows = json.loads(data.decode("utf-8"))
        except UnicodeDecodeError as exc:
            yield LandingRecord(0, None, rejection=V.Rejection(V.INVALID_ENCODING, f"not UTF-8: {exc.reason} at byte {exc.start}"))
            return
        except ValueError as exc:
            ends_early = getattr(exc, "pos", 0) >= len(data.decode("utf-8").rstrip())
            reason = V.TRUNCATED_FILE if ends_early else V.INVALID_JSON
            yield LandingRecord(0, cap_raw(data[:RAW_LIMIT]), rejection=V.Rejection(reason, f"not a JSON array: {exc}"))
            return
        for index, row in enumerate(rows, start=1):
            yield LandingRecord(index, cap_raw(json.dumps(row, ensure_ascii=False)), row)
        return
    lines = data.split(b"\n")
    last = lines[-1]
    if last.strip() and not _complete_last_line(last):
        yield LandingRecord(0, None, rejection=_cut_off(len(lines)))
        return
    for line_no, line in enumerate(lines, start=1):
        if line.strip():
            yield _json_line(line_no, line)


def _complete_last_line(last: bytes, encoding: str | None = None) -> bool:
    """A last line without a final newline is complete only if it parses (writers may omit the
    final newline); otherwise the file is still being written or was cut."""
    try:
        json.loads(last.decode(encoding or "utf-8", errors="legacy_latin1" if encoding else "strict"))
    except (UnicodeDecodeError, ValueError):
        return False
    return True


def _cut_off(line_no: int) -> V.Rejection:
    return V.Rejection(V.TRUNCATED_FILE, f"line {line_no} is cut off (no final newline and not valid JSON)")


def _json_line(line_no: int, line: bytes, encoding: str | None = None) -> LandingRecord:
    """One JSON Lines row: the parsed record, or why it could not be parsed."""
    try:
        text = line.decode(encoding, errors="legacy_latin1") if encoding else line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raw = cap_raw(line.decode("utf-8", errors="replace"))
        return LandingRecord(line_no, raw, rejection=V.Rejection(V.INVALID_ENCODING, f"not UTF-8: {exc.reason} at byte {exc.start}"))
    try:
        record = json.loads(text)
    except ValueError as exc:
        return LandingRecord(line_no, cap_raw(text), rejection=V.Rejection(V.INVALID_JSON, str(exc)))
    return LandingRecord(line_no, cap_raw(text), record)


# -- JSON Lines as a stream ---------------------------------------------------------------------

STREAM_CHUNK_BYTES = 1 << 20
# A longer line is rejected (``line_too_long``) without ever being held in memory whole.
MAX_LINE_BYTES = 64 << 20


class _FileProblem(Exception):
    def __init__(self, rejection: V.Rejection):
        super().__init__(rejection.detail)
        self.rejection = rejection


@dataclass(frozen=True)
class JsonLinesSurvey:
    """The first pass over a JSON Lines file: its hash and whether (and how) it can be streamed."""

    content_hash: str
    rejection: V.Rejection | None = None
    streamable: bool = False
    encoding: str | None = None
    bom: bool = False


def _text_chunks(path: str, digest=None) -> Iterator[bytes]:
    """The file's bytes, gunzipped when the name ends in .gz, in chunks; ``digest`` sees the stored bytes.

    Raises:
        _FileProblem: A corrupt or cut-off gzip stream.
    """
    import pyarrow.fs as pafs

    fs, local = pafs.FileSystem.from_uri(readable_uri(path))
    gz = path.lower().endswith(".gz")
    inflate, ended = zlib.decompressobj(wbits=31), False
    with fs.open_input_stream(local, compression=None) as stream:
        while chunk := stream.read(STREAM_CHUNK_BYTES):
            if digest is not None:
                digest.update(chunk)
            if not gz:
                yield chunk
                continue
            data = chunk
            while data:
                if ended:  # another gzip member follows
                    inflate, ended = zlib.decompressobj(wbits=31), False
                try:
                    # Bounded output per call: a small compressed chunk can inflate to gigabytes.
                    out = inflate.decompress(data, STREAM_CHUNK_BYTES)
                except zlib.error as exc:
                    raise _FileProblem(V.Rejection(V.UNREADABLE_FILE, f"corrupt gzip: error: {exc}")) from None
                if out:
                    yield out
                ended = inflate.eof
                data = inflate.unused_data if ended else inflate.unconsumed_tail
    if gz and not ended:
        raise _FileProblem(V.Rejection(V.TRUNCATED_FILE, "gzip stream ends early: the compressed file is cut off"))


def survey_json_lines(path: str) -> JsonLinesSurvey:
    """Hashes a JSON Lines file and finds its file-level problems in one streaming pass.

    Not streamable (read whole instead): a JSON array, or UTF-16/32 text (its mark says so).
    """
    import hashlib

    digest = hashlib.sha256()
    head, tail, lines, tail_too_long = b"", [], 1, False
    utf8, valid, multibyte, legacy, anything = codecs.getincrementaldecoder("utf-8")(), True, False, True, False
    try:
        for chunk in _text_chunks(path, digest):
            if len(head) < _SNIFF_BYTES:
                head += chunk[: _SNIFF_BYTES - len(head)]
            if valid:
                try:
                    utf8.decode(chunk)
                except UnicodeDecodeError:
                    valid = False
            multibyte = multibyte or bool(_UTF8_MULTIBYTE.search(chunk))
            legacy = legacy and _looks_like_legacy_text(chunk)
            anything = anything or bool(chunk.strip())
            newline = chunk.rfind(b"\n")
            lines += chunk.count(b"\n")
            if newline >= 0:
                tail, tail_too_long = [chunk[newline + 1 :]], False
            elif not tail_too_long:
                tail.append(chunk)
                if sum(map(len, tail)) > MAX_LINE_BYTES:
                    tail, tail_too_long = [], True
        if valid:
            utf8.decode(b"", final=True)
    except _FileProblem as problem:
        return JsonLinesSurvey(digest.hexdigest(), problem.rejection)
    except UnicodeDecodeError:
        valid = False
    content_hash = digest.hexdigest()
    bom = head.startswith(codecs.BOM_UTF8)
    text_start = head[3:] if bom else head
    if any(head.startswith(mark) for mark, codec in _BOMS if codec != "utf-8-sig") or text_start.lstrip()[:1] == b"[":
        return JsonLinesSurvey(content_hash)
    if not anything:
        return JsonLinesSurvey(content_hash, V.Rejection(V.EMPTY_FILE, "the file has no rows"))
    if b"\x00" in text_start:
        detail = "binary content in a json file (or UTF-16/UTF-32 text without a byte-order mark)"
        return JsonLinesSurvey(content_hash, V.Rejection(V.UNKNOWN_FORMAT, detail))
    encoding = LEGACY_ENCODING if not valid and not multibyte and legacy else None
    tail = b"".join(tail)
    if tail.strip() and not tail_too_long and not _complete_last_line(tail, encoding):
        return JsonLinesSurvey(content_hash, _cut_off(lines))
    return JsonLinesSurvey(content_hash, streamable=True, encoding=encoding, bom=bom)


def _streamed_json_lines(path: str, survey: JsonLinesSurvey) -> Iterator[LandingRecord]:
    """The rows of a surveyed JSON Lines file, read as a stream (the second pass)."""
    notes = (f"decoded_{survey.encoding}",) if survey.encoding else ()
    # The pieces of the line being read (joined once complete: no copy per chunk).
    tail, too_long, line_no, first = [], False, 0, survey.bom

    def row(line: bytes) -> Iterator[LandingRecord]:
        if too_long:
            detail = f"the line is longer than {MAX_LINE_BYTES >> 20} MiB; it was not read"
            yield LandingRecord(line_no, None, rejection=V.Rejection(V.LINE_TOO_LONG, detail), notes=notes)
        elif line.strip():
            yield dataclasses.replace(_json_line(line_no, line, survey.encoding), notes=notes)

    for chunk in _text_chunks(path):
        if first:
            chunk, first = chunk[len(codecs.BOM_UTF8) :], False
        pieces = chunk.split(b"\n")
        for piece in pieces[:-1]:
            line_no += 1
            yield from row(b"".join([*tail, piece]) if not too_long else b"")
            tail, too_long = [], False
        if not too_long:
            tail.append(pieces[-1])
            if sum(map(len, tail)) > MAX_LINE_BYTES:
                tail, too_long = [], True
    last = b"".join(tail)
    if too_long or last.strip():
        line_no += 1
        yield from row(last)


def _csv_records(data: bytes) -> Iterator[LandingRecord]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        yield LandingRecord(0, None, rejection=V.Rejection(V.INVALID_ENCODING, f"not UTF-8: {exc.reason} at byte {exc.start}"))
        return
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows = list(reader)
    if rows and not text.endswith(("\n", "\r")) and (None in rows[-1].values() or None in rows[-1]):
        # The last row has fewer (or more) cells than the header and no final newline: cut off.
        yield LandingRecord(0, None, rejection=V.Rejection(V.TRUNCATED_FILE, f"row {len(rows)} is cut off"))
        return
    columns = len(reader.fieldnames or ())
    for row_no, row in enumerate(rows, start=1):
        if None in row or None in row.values():
            # More or fewer cells than the header: the values cannot be told apart by name.
            cells = columns + len(row.get(None, ())) - sum(v is None for v in row.values())
            raw = cap_raw(json.dumps(row, ensure_ascii=False))
            detail = f"the row has {cells} cells, the header {columns}"
            yield LandingRecord(row_no, raw, rejection=V.Rejection(V.INVALID_CSV_ROW, detail))
            continue
        # CSV has no types: empty cells mean "absent", the rest stays text.
        record = {k: (v if v != "" else None) for k, v in row.items()}
        yield LandingRecord(row_no, cap_raw(json.dumps(row, ensure_ascii=False)), record)


def _parquet_records(data: bytes) -> Iterator[LandingRecord]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(io.BytesIO(data))
    except Exception as exc:  # pyarrow raises several unrelated types for broken files
        yield LandingRecord(0, None, rejection=V.Rejection(V.UNREADABLE_FILE, f"not readable Parquet: {exc}"))
        return
    for row_no, row in enumerate(table.to_pylist(), start=1):
        yield LandingRecord(row_no, cap_raw(json.dumps(row, ensure_ascii=False, default=str)), row)


def cap_raw(raw: Any) -> str:
    """A raw row as stored in ``quarantine.raw``: text, at most RAW_LIMIT characters."""
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else str(raw)
    return text if len(text) <= RAW_LIMIT else text[:RAW_LIMIT] + "…[truncated]"


def write_jsonl(path: str | os.PathLike[str], rows: Iterable[dict | str | None]) -> None:
    """Writes a landing file atomically: JSON Lines, gzipped when the name ends in ``.gz``.

    Each row is a record (written as one JSON object), a string (written as is:
    a source line that could not be parsed, for ingest to quarantine) or None
    (an empty line, so that line numbers can follow a source file's).
    The bytes depend only on the rows, so a rewrite of the same rows is identical.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for row in rows:
        if row is None:
            lines.append("\n")
        elif isinstance(row, str):
            lines.append(row.replace("\n", " ") + "\n")
        else:
            lines.append(json.dumps(row, sort_keys=True, ensure_ascii=False) + "\n")
    payload = "".join(lines).encode("utf-8")
    if path.name.endswith(".gz"):
        # mtime=0 and no file name in the header keep the bytes identical between runs.
        payload = gzip.compress(payload, compresslevel=6, mtime=0)
    # A landing reader may be listing the folder right now: write under a
    # dot-name (ignored by Spark and most readers) and rename into place.
    staging = path.with_name(f".{path.name}.tmp")
    staging.write_bytes(payload)
    os.replace(staging, path)
