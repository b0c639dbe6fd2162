"""Reading landing files: JSON Lines / JSON / CSV (optionally gzipped) and Parquet.

Files are read on executors, one task per file, so every row keeps its source
file and line number for ``quarantine``, and a file that cannot be read costs
one quarantine row instead of the run.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from datetime import datetime, timezone
from typing import Any
from urllib.parse import unquote, urlparse

from interestlake.datasets import validation as V

# Extension (after an optional .gz) -> reader name.
_FORMATS = {".jsonl": "json", ".ndjson": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
RAW_LIMIT = 4096


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


def readable_uri(path: str) -> str:
    """A URI pyarrow can open for a path as Spark spells it ('file:/x', 's3a://b/k')."""
    parsed = urlparse(path)
    if parsed.scheme == "file":
        return unquote(parsed.path)
    if parsed.scheme in ("s3a", "s3n"):
        return "s3://" + path.split("://", 1)[1]
    return path


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


def read_records(path: str) -> Iterator[LandingRecord]:
    """Yields every row of one landing file; unreadable parts become rejections.

    Row numbers are 1-based lines (JSON Lines), data rows (CSV) or row indices
    (Parquet, JSON arrays). File-level problems are reported as row 0.
    """
    import pyarrow.fs as pafs

    reader = file_format(path)
    if reader is None:
        yield LandingRecord(0, None, rejection=V.Rejection(V.UNKNOWN_FORMAT, f"unknown file type: {path}"))
        return
    fs, local = pafs.FileSystem.from_uri(readable_uri(path))
    try:
        # compression=None: a corrupt gzip must reach our handler, not pyarrow's.
        with fs.open_input_stream(local, compression=None) as stream:
            data = stream.read()
        if path.lower().endswith(".gz"):
            data = gzip.decompress(data)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        yield LandingRecord(0, None, rejection=V.Rejection(V.UNREADABLE_FILE, f"{type(exc).__name__}: {exc}"))
        return
    if reader == "parquet":
        yield from _parquet_records(data)
    elif reader == "csv":
        yield from _csv_records(data)
    else:
        yield from _json_records(data)


def _json_records(data: bytes) -> Iterator[LandingRecord]:
    if data.lstrip()[:1] == b"[":
        # A .json file holding one array of objects.
        try:
            rows = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            yield LandingRecord(0, _cap(data), rejection=V.Rejection(V.INVALID_JSON, f"not a JSON array: {exc}"))
            return
        for index, row in enumerate(rows, start=1):
            yield LandingRecord(index, _cap(json.dumps(row, ensure_ascii=False)), row)
        return
    for line_no, line in enumerate(data.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raw = _cap(line.decode("utf-8", errors="replace"))
            yield LandingRecord(line_no, raw, rejection=V.Rejection(V.INVALID_ENCODING, f"not UTF-8: {exc}"))
            continue
        try:
            record = json.loads(text)
        except ValueError as exc:
            yield LandingRecord(line_no, _cap(text), rejection=V.Rejection(V.INVALID_JSON, str(exc)))
            continue
        yield LandingRecord(line_no, _cap(text), record)


def _csv_records(data: bytes) -> Iterator[LandingRecord]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        yield LandingRecord(0, None, rejection=V.Rejection(V.INVALID_ENCODING, f"not UTF-8: {exc}"))
        return
    reader = csv.DictReader(io.StringIO(text, newline=""))
    for row_no, row in enumerate(reader, start=1):
        # CSV has no types: empty cells mean "absent", the rest stays text.
        record = {k: (v if v != "" else None) for k, v in row.items() if k is not None}
        yield LandingRecord(row_no, _cap(json.dumps(row, ensure_ascii=False)), record)


def _parquet_records(data: bytes) -> Iterator[LandingRecord]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(io.BytesIO(data))
    except Exception as exc:  # pyarrow raises several unrelated types for broken files
        yield LandingRecord(0, None, rejection=V.Rejection(V.UNREADABLE_FILE, f"not readable Parquet: {exc}"))
        return
    for row_no, row in enumerate(table.to_pylist(), start=1):
        yield LandingRecord(row_no, _cap(json.dumps(row, ensure_ascii=False, default=str)), row)


def _cap(raw: Any) -> str:
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
