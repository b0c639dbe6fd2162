"""Ingest stage: landing files -> ``events``, ``reviews``, ``items`` and ``quarantine``.

Each landing row is validated on the executors; valid rows are deduplicated on
their key (the first occurrence wins, later ones are counted as duplicates) and
against what the tables already hold, rejected rows go to ``quarantine`` with
their source file, row number, reason and raw text.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from interestlake import constants as C
from interestlake.datasets import validation as V
from interestlake.datasets.landing import (
    CheckedRow,
    LandingFile,
    cap_raw,
    check_file,
    file_sha256,
    landing_folder_exists,
    stat_file,
)
from interestlake.lake.lock import stream_running
from interestlake.lake.schemas import arrow_schema, table_spec
from interestlake.lake.tables import LakeTables, Txn
from interestlake.lake.uris import readable_uri
from interestlake.pipeline.frames import with_values
from interestlake.pipeline.run import RunContext, StageReport, driver_path, log
from interestlake.privacy import Pseudonymizer, pseudonymizer
from interestlake.settings import Settings

STAGE = "ingest"
_PARSE_COLUMNS = [
    T.StructField("row_no", T.LongType()),
    T.StructField("reason", T.StringType()),
    T.StructField("detail", T.StringType()),
    T.StructField("raw", T.StringType()),
    T.StructField("content_hash", T.StringType()),
    # What the counts say about the row (``CheckedRow.notes``): encoding, unknown field names.
    T.StructField("notes", T.ArrayType(T.StringType())),
]
_PROVENANCE = {"source", C.COL_RUN_ID, "ingested_at"}
# Only path, time and length are selected: the file contents are read by our own parser.
_BINARY_FILE_SCHEMA = "path string, modificationTime timestamp, length long, content binary"


def ingest(spark: SparkSession, lake: LakeTables, settings: Settings, run: RunContext) -> StageReport:
    """Ingests the landing files not ingested before, exactly once, then retries held files that changed.

    The landing folders are one Structured Streaming file source (``binaryFile``,
    paths only, over ``<landing>/{events,reviews,items}``) run with
    ``trigger(availableNow=True)`` and a checkpoint under
    ``<lake.root>/_checkpoints/ingest/landing``. Spark records which files make
    up micro-batch N before running it; every Delta commit of that batch carries
    the application transaction id (``interestlake.ingest.<kind>.<checkpoint id>``,
    N). A run that dies after committing but before Spark marked the batch done
    re-runs batch N with the same files on the next start, and the commits
    already made are skipped: no file is lost or ingested twice. Files that land
    during a run are left for the next one.

    A file with a problem of its own (corrupt or cut-off gzip, a half-written last
    line, unknown format, no rows) lands nothing, costs one ``quarantine`` row and
    is recorded as *held* in ``landing_files`` with its size, time and SHA-256;
    the other files of the batch land as usual. The stream never offers a path
    twice, so each run then looks at the held files: one whose content changed is
    ingested again, as one more batch of its own (see ``retry_held_files``).

    While an ``interestlake stream`` runs on the lake (it lends its writer lock to a run
    that waits for it), nothing is done: the stream ingests with this checkpoint itself.

    Returns:
        Counts of files and rows read, accepted, duplicated and quarantined (per reason).
    """
    report = ingest_report(run)
    stream = stream_running(settings.lake.root)
    if stream is not None:
        # This run was lent the writer lock by a running stream (it waited for the lock, as the
        # catalog DAG's jobs do): a second query on the stream's checkpoint would end the stream
        # ("Concurrent update to the log") once it writes its next batch.
        report.note = (f"an interestlake stream ({stream.get('owner', 'unknown')}) runs on this lake and "
                       "ingests what lands; nothing to do here")
        log.info("ingest: %s", report.note)
        return report
    source = landing_source(spark, settings)
    if source is None:
        return report
    pseudonym = pseudonymizer(settings)
    query = (
        source.files.writeStream.foreachBatch(
            lambda batch, batch_id: ingest_micro_batch(spark, lake, settings, source, batch, batch_id, run, report, pseudonym)
        )
        .option("checkpointLocation", source.checkpoint)
        .trigger(availableNow=True)
        .queryName("interestlake_ingest")
        .start()
    )
    query.awaitTermination()
    retry_held_files(spark, lake, run, report, pseudonym, settings)
    return report


def ingest_report(run: RunContext) -> StageReport:
    """An empty report of the ingest stage (a count per landing kind)."""
    report = StageReport(STAGE, run.run_id)
    report.counts.update({f"{kind}_files": 0 for kind in C.LANDING_KINDS})
    return report


@dataclass(frozen=True)
class LandingSource:
    """The landing folders as one streaming DataFrame of file paths, and its checkpoint.

    ``ingest`` runs it with ``trigger(availableNow=True)``, ``interestlake stream``
    with a processing-time trigger: same source, same checkpoint, same transaction ids.
    """

    files: DataFrame
    landing: str
    checkpoint: str
    ident: str


def landing_source(spark: SparkSession, settings: Settings) -> LandingSource | None:
    """The streaming file source over ``<landing>/{events,reviews,items}`` (None when no landing folder exists yet)."""
    landing = settings.lake.landing_uri.rstrip("/")
    present = [kind for kind in C.LANDING_KINDS if landing_folder_exists(f"{landing}/{kind}")]
    if not present:
        log.info("ingest: no landing folder under %s yet; nothing to do", landing)
        return None
    checkpoint = f"{settings.lake.root.rstrip('/')}/_checkpoints/ingest/landing"
    files = (
        spark.readStream.format("binaryFile")
        .schema(_BINARY_FILE_SCHEMA)
        .option("recursiveFileLookup", "true")
        # Spark ignores files older than this relative to the newest it saw; a
        # late copy of an old file must still be ingested.
        .option("maxFileAge", "3650d")
        # One source for every kind: a query per kind would cost a query's start-up each.
        .load(f"{landing}/{{{','.join(C.LANDING_KINDS)}}}")
        # Epoch microseconds: collect() would hand back the driver's local time.
        .select("path", F.unix_micros("modificationTime").alias("mtime_us"), "length")
    )
    clear_unfinished_writes(checkpoint)
    return LandingSource(files, landing, checkpoint, checkpoint_id(checkpoint))


def clear_unfinished_writes(checkpoint: str) -> int:
    """Removes the temporary files a killed run left in the streaming checkpoint; returns how many.

    Spark writes each checkpoint file (``offsets/<batch>``, ``commits/<batch>``, the source
    log, ``metadata``) as a hidden temporary file (``.<name>.<uuid>.tmp``, with its
    ``..<name>.<uuid>.tmp.crc`` on a local disk) that it then renames: one that is still
    there belongs to a write that never finished. Spark skips them when it reads its logs,
    but a run killed while it wrote the first batch's offsets leaves one alone in
    ``offsets/``, and every later start then fails ("the checkpoint location ... offsets
    should be empty on batch 0"): the lake could not ingest again until someone deleted
    it by hand. Called under the lake's writer lock, so no live writer of this checkpoint
    is mid-write.
    """
    import pyarrow.fs as pafs

    fs, folder = pafs.FileSystem.from_uri(readable_uri(checkpoint))
    if fs.get_file_info(folder).type != pafs.FileType.Directory:
        return 0
    unfinished = [
        info.path for info in fs.get_file_info(pafs.FileSelector(folder, recursive=True))
        if info.type == pafs.FileType.File and info.base_name.startswith(".")
        and info.base_name.endswith((".tmp", ".tmp.crc"))
    ]
    for path in unfinished:
        fs.delete_file(path)
    if unfinished:
        log.warning("ingest: removed %d unfinished file(s) a stopped run left in the checkpoint %s",
                    len(unfinished), checkpoint)
    return len(unfinished)


def ingest_micro_batch(
    spark: SparkSession, lake: LakeTables, settings: Settings, source: LandingSource, batch: DataFrame, batch_id: int,
    run: RunContext, report: StageReport, pseudonym: Pseudonymizer | None,
) -> list[LandingFile]:
    """Ingests micro-batch ``batch_id`` of the landing source (the ``foreachBatch`` function).

    Returns:
        The batch's landing files.
    """
    by_kind: dict[str, list[LandingFile]] = {}
    found = [
        LandingFile(row.path, row.length, datetime.fromtimestamp(row.mtime_us / 1e6, tz=timezone.utc))
        for row in batch.collect()
    ]
    found += files_left_out(source.checkpoint, batch_id, found)
    for landed in found:
        by_kind.setdefault(landing_kind(source.landing, landed.path), []).append(landed)
    recorded = []
    for kind in sorted(by_kind, key=_KIND_ORDER.index):
        txn = Txn(f"interestlake.ingest.{kind}.{source.ident}", batch_id)
        files_of_kind = sorted(by_kind[kind], key=lambda f: f.path)
        recorded += _ingest_files(spark, lake, kind, files_of_kind, txn, run, report, pseudonym, settings)
    _record_files(lake, recorded, run)
    return found


def files_left_out(checkpoint: str, batch_id: int, found: list[LandingFile]) -> list[LandingFile]:
    """Files of micro-batch ``batch_id`` that Spark recorded as taken but left out of the batch.

    Spark's file source lists a file of 0 bytes (one created but not yet written),
    records it as seen in its source log, and then drops it from the batch's rows:
    it would never be offered again, even once written. The source log
    (``<checkpoint>/sources/0/<batch>``, JSON lines after a ``v1`` header;
    ``<batch>.compact`` every tenth batch) names every file of the batch, so those
    files are taken here like the others (a file still empty is held, see
    ``retry_held_files``).
    """
    import json

    import pyarrow.fs as pafs

    fs, folder = pafs.FileSystem.from_uri(readable_uri(f"{checkpoint}/sources/0"))
    entries = []
    for name in (str(batch_id), f"{batch_id}.compact"):
        if fs.get_file_info(f"{folder}/{name}").type != pafs.FileType.File:
            continue
        with fs.open_input_stream(f"{folder}/{name}") as handle:
            lines = handle.read().decode("utf-8").splitlines()[1:]
        entries = [json.loads(line) for line in lines if line.strip()]
        break
    else:
        log.warning("ingest: Spark's source log of batch %d was not found; files of 0 bytes are not checked", batch_id)
    taken = {readable_uri(f.path) for f in found}
    left_out = []
    for entry in entries:
        if entry.get("batchId") != batch_id or readable_uri(entry["path"]) in taken:
            continue
        # Spelled as Spark spells the paths of the batch's rows (file:/x, not file:///x).
        path = "file:/" + entry["path"][len("file:///"):] if entry["path"].startswith("file:///") else entry["path"]
        now = stat_file(path)
        written = datetime.fromtimestamp(entry["timestamp"] / 1000, tz=timezone.utc)
        left_out.append(LandingFile(path, now.size if now else 0, now.mtime if now else written))
    return left_out


# Catalog first: events and reviews of the same batch are then checked against it.
_KIND_ORDER = (C.ITEMS, C.EVENTS, C.REVIEWS)
HELD, INGESTED = "held", "ingested"


def retry_held_files(
    spark: SparkSession, lake: LakeTables, run: RunContext, report: StageReport, pseudonym: Pseudonymizer | None = None,
    settings: Settings | None = None,
) -> None:
    """Ingests again the held landing files whose content changed since they were held.

    A held file whose size and modification time are those recorded is not read.
    Otherwise its SHA-256 is compared with the recorded one: the same bytes (a
    touched file) only update the record; new bytes are parsed and committed like
    a batch of one file, under the application transaction id
    ``interestlake.ingest.retry.<digest of path and content hash>`` (version 1), so
    each content of each file is committed at most once even when a run dies
    half-way. Every row is then in its table once (keys already there count as
    duplicates) and the file is recorded as ingested, or held again with its new
    fingerprint if it is still incomplete.
    """
    import hashlib

    held = held_files(lake)
    if not held:
        return
    recorded = []
    for entry in sorted(held, key=lambda e: (_KIND_ORDER.index(e["kind"]), e["source"])):
        if entry[C.COL_RUN_ID] == run.run_id:
            # Held by this very run (maybe still being written): the next run looks again,
            # so that a run never quarantines the same row of a file twice.
            continue
        now = stat_file(entry["source"])
        if now is None:
            log.warning("ingest: held file %s is gone; it stays held", entry["source"])
            continue
        if now.size == entry["size"] and _millis(now.mtime) == _millis(entry["modified_at"]):
            continue
        digest = file_sha256(entry["source"])
        if digest == entry["content_hash"]:
            # Touched, not changed: remember the new time so the next run does not read it again.
            recorded.append({**entry, "size": now.size, "modified_at": now.mtime})
            continue
        report.counts["files_retried"] = report.counts.get("files_retried", 0) + 1
        log.info("ingest: held file %s changed; ingesting it again", entry["source"])
        app = hashlib.sha256(f"{entry['source']}\x00{digest}".encode()).hexdigest()[:24]
        recorded += _ingest_files(
            spark, lake, entry["kind"], [now], Txn(f"interestlake.ingest.retry.{app}", 1), run, report, pseudonym,
            settings,
        )
    _record_files(lake, recorded, run)


def _millis(when: datetime | None) -> int | None:
    # Spark lists files with millisecond times: compare at that precision.
    return None if when is None else int(when.timestamp() * 1000)


def held_files(lake: LakeTables) -> list[dict]:
    """The ``landing_files`` rows of files whose newest recorded version is held.

    Read on the driver, in two filtered reads: the sources with a held row, then
    every row of those sources only. The table gains a row per landing file, so
    a run must not read all of it (``maintain`` also ages out old rows).
    """
    held = lake.read_rows(C.LANDING_FILES, filters=[("status", "=", HELD)], columns=["source"])
    if not held:
        return []
    newest: dict[str, dict] = {}
    for row in lake.read_rows(C.LANDING_FILES, filters=[("source", "in", sorted({r["source"] for r in held}))]):
        known = newest.get(row["source"])
        if known is None or row["recorded_at"] > known["recorded_at"]:
            newest[row["source"]] = row
    return [row for row in newest.values() if row["status"] == HELD]


def _record_files(lake: LakeTables, rows: list[dict], run: RunContext) -> None:
    """Upserts ``landing_files`` rows by (source, content_hash): a replayed batch writes the same rows."""
    if not rows:
        return
    now = datetime.now(timezone.utc)
    lake.upsert_rows(
        C.LANDING_FILES, [{**row, C.COL_RUN_ID: run.run_id, "recorded_at": now} for row in rows],
        metadata={"stage": STAGE, "run_id": run.run_id},
    )


def landing_kind(landing: str, path: str) -> str:
    """The landing kind (``events``, ``reviews``, ``items``) of a file found under the landing root."""
    relative = readable_uri(path).split(readable_uri(landing).rstrip("/") + "/", 1)[-1]
    kind = relative.split("/", 1)[0]
    if kind not in C.LANDING_KINDS:
        raise ValueError(f"{path}: not under {landing}/{{{','.join(C.LANDING_KINDS)}}}")
    return kind


def _ingest_files(
    spark: SparkSession, lake: LakeTables, kind: str, files: list[LandingFile], txn: Txn, run: RunContext,
    report: StageReport, pseudonym: Pseudonymizer | None, settings: Settings | None = None,
) -> list[dict]:
    """One micro-batch: parse, validate, dedupe and commit a set of landing files.

    A batch that ``driver_path`` sends to the driver (event or review files within
    ``small_batch.max_landing_mb``) is parsed and deduplicated there (``_DriverBatch``), any
    other on the executors (``_SparkBatch``); both parse with the same function and commit the same rows.

    Returns:
        The ``landing_files`` rows of the files (ingested or held), for the caller to record
        once its commits are done.
    """
    log.info("ingest: %d new %s file(s) (batch %d)", len(files), kind, txn.version)
    counts = report.counts
    counts[f"{kind}_files"] += len(files)
    on_driver = driver_path(STAGE, lake, settings, kind=kind, landing_bytes=sum(f.size for f in files))
    parsed = _DriverBatch(lake, kind, files, pseudonym) if on_driver else _SparkBatch(spark, lake, kind, files, pseudonym)
    accepted_count = rejected_count = 0
    for reason, count in parsed.reason_counts().items():
        if reason is None:
            accepted_count = count
        else:
            rejected_count += count
        key = f"{kind}_accepted" if reason is None else f"{kind}_rejected_{reason}"
        counts[key] = counts.get(key, 0) + count
    for note, count in parsed.note_counts().items():
        counts[f"{kind}_{note}"] = counts.get(f"{kind}_{note}", 0) + count
    file_rows = _file_rows(kind, files, parsed.file_summary())
    held = sum(row["status"] == HELD for row in file_rows)
    if held:
        counts["files_held"] = counts.get("files_held", 0) + held
    if kind != C.ITEMS and accepted_count:
        # Kept (the item may arrive later), but counted: only catalog items are ever recommended.
        counts[f"{kind}_unknown_item"] = counts.get(f"{kind}_unknown_item", 0) + parsed.unknown_items()
    rows = with_values(parsed.new_rows(), {C.COL_RUN_ID: run.run_id, "ingested_at": run.timestamp})
    metadata = {"stage": STAGE, "run_id": run.run_id, "batch": txn.version}
    write = lake.merge if kind == C.ITEMS else lake.append
    commit = write(kind, rows, txn=txn, metadata=metadata)
    if commit.skipped != "already committed":
        # Every accepted row not written lost to an earlier row with its key.
        counts[f"{kind}_duplicates"] = counts.get(f"{kind}_duplicates", 0) + accepted_count - commit.source_rows
    report.commits.append(commit)
    if rejected_count:
        rejected = with_values(parsed.rejected(), {C.COL_RUN_ID: run.run_id, "quarantined_at": run.timestamp})
        # The quarantine table has its own transaction id per kind: a batch that died
        # between the two commits redoes only the missing one.
        quarantine_txn = Txn(f"{txn.app_id}.quarantine", txn.version)
        report.commits.append(lake.append(C.QUARANTINE, rejected, txn=quarantine_txn, metadata=metadata))
    parsed.release()
    return file_rows


_PARSE_ONLY = ["reason", "detail", "raw", "content_hash", "notes"]
# Rows per DataFrame handed from the parsing function to Spark (each raw row is at most 4 KiB).
PARSE_BATCH_ROWS = 20_000
_QUARANTINED = ["source", "row_no", "reason", "detail", "raw", "kind"]


class _SparkBatch:
    """Parsed landing files as a DataFrame: parsed on the executors, deduplicated by Spark jobs."""

    def __init__(self, spark: SparkSession, lake: LakeTables, kind: str, files: list[LandingFile], pseudonym):
        self.lake, self.kind = lake, kind
        self.parsed = parse_landing(spark, kind, files, pseudonym).persist()

    def reason_counts(self) -> dict[str | None, int]:
        noted = F.when(F.col("notes").isNotNull(), F.size("notes")).otherwise(0)
        by_reason = self.parsed.groupBy("reason").agg(F.count(F.lit(1)).alias("count"), F.sum(noted).alias("notes")).collect()
        self._notes = sum(row["notes"] for row in by_reason)
        return {row["reason"]: row["count"] for row in by_reason}

    def note_counts(self) -> dict[str, int]:
        """How many rows carry each note (after ``reason_counts``, which tells whether any does)."""
        if not self._notes:
            return {}
        notes = self.parsed.select(F.explode("notes").alias("note")).groupBy("note").count().collect()
        return {row["note"]: row["count"] for row in notes}

    def file_summary(self) -> dict[str, tuple[str | None, str | None]]:
        """source -> (content hash, the file's own rejection reason or None)."""
        file_reasons = F.when(F.col("row_no") == 0, F.col("reason"))
        return {
            row["source"]: (row["content_hash"], row["reason"])
            for row in self.parsed.groupBy("source")
            .agg(F.max("content_hash").alias("content_hash"), F.max(file_reasons).alias("reason"))
            .collect()
        }

    def accepted(self) -> DataFrame:
        return self.parsed.filter(F.col("reason").isNull()).drop(*_PARSE_ONLY)

    def unknown_items(self) -> int:
        catalog = self.lake.read(C.ITEMS).select(C.COL_ITEM_ID)
        return self.accepted().filter(F.col(C.COL_ITEM_ID).isNotNull()).join(catalog, C.COL_ITEM_ID, "left_anti").count()

    def new_rows(self) -> DataFrame:
        return _new_rows(self.lake, self.kind, self.accepted())

    def rejected(self) -> DataFrame:
        return self.parsed.filter(F.col("reason").isNotNull()).withColumn("kind", F.lit(self.kind)).select(*_QUARANTINED)

    def release(self) -> None:
        self.parsed.unpersist()


class _DriverBatch:
    """Parsed landing files as an Arrow table: parsed and deduplicated on the driver, for small batches.

    The rows are those ``_SparkBatch`` gives: the same parsing function
    (``_parse_files``), the first row of each key (by file, then line) kept, keys
    already stored dropped; stored keys and catalog items are read filtered to the
    batch's own keys, so nothing but the batch is held on the driver.
    """

    def __init__(self, lake: LakeTables, kind: str, files: list[LandingFile], pseudonym):
        self.lake, self.kind = lake, kind
        out_schema = _parse_schema(kind)
        paths = pd.DataFrame({
            "path": [f.path for f in files],
            # As mapInPandas hands them over: naive UTC.
            "mtime": pd.to_datetime([f.mtime for f in files], utc=True).tz_localize(None),
        })
        schema = arrow_schema(out_schema)
        self.parsed = pa.concat_tables([
            pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
            for frame in _parse_files(kind, out_schema, pseudonym)(iter([paths]))
        ])

    def reason_counts(self) -> dict[str | None, int]:
        return dict(Counter(self.parsed.column("reason").to_pylist()))

    def note_counts(self) -> dict[str, int]:
        return dict(Counter(note for notes in self.parsed.column("notes").to_pylist() for note in notes or ()))

    def file_summary(self) -> dict[str, tuple[str | None, str | None]]:
        summary: dict[str, tuple[str | None, str | None]] = {}
        columns = (self.parsed.column(n).to_pylist() for n in ("source", "row_no", "content_hash", "reason"))
        for source, row_no, digest, reason in zip(*columns):
            known_digest, known_reason = summary.get(source, (None, None))
            file_reason = reason if row_no == 0 else None
            summary[source] = (max(filter(None, [known_digest, digest]), default=None),
                               max(filter(None, [known_reason, file_reason]), default=None))
        return summary

    def accepted(self) -> pa.Table:
        return self.parsed.filter(pc.is_null(self.parsed.column("reason"))).drop_columns(_PARSE_ONLY)

    def unknown_items(self) -> int:
        items = pc.drop_null(self.accepted().column(C.COL_ITEM_ID)).combine_chunks()
        listed = self.lake.read_arrow(C.ITEMS, [C.COL_ITEM_ID], pc.field(C.COL_ITEM_ID).isin(items.unique()))
        return int(pc.sum(pc.invert(pc.is_in(items, value_set=listed.column(C.COL_ITEM_ID).combine_chunks()))).as_py() or 0)

    def new_rows(self) -> pa.Table:
        (key,) = table_spec(self.kind).keys
        ordered = self.accepted().sort_by([("source", "ascending"), ("row_no", "ascending")])
        first = pc.equal(pa.array(range(ordered.num_rows)),
                         pa.array(_first_index(ordered.column(key).to_pylist())))
        ordered = ordered.filter(first)
        stored = self.lake.read_arrow(self.kind, [key], pc.field(key).isin(ordered.column(key).combine_chunks()))
        fresh = pc.invert(pc.is_in(ordered.column(key), value_set=stored.column(key).combine_chunks()))
        return ordered.filter(fresh).drop_columns(["row_no"])

    def rejected(self) -> pa.Table:
        rejected = self.parsed.filter(pc.is_valid(self.parsed.column("reason")))
        return rejected.append_column("kind", pa.array([self.kind] * rejected.num_rows, pa.string())).select(_QUARANTINED)

    def release(self) -> None:
        self.parsed = None


def _first_index(keys: list) -> list[int]:
    """For each position, the position of the first occurrence of its key."""
    first: dict = {}
    return [first.setdefault(key, position) for position, key in enumerate(keys)]


def _file_rows(kind: str, files: list[LandingFile], summary: dict[str, tuple[str | None, str | None]]) -> list[dict]:
    """One ``landing_files`` row per file: its hash and whether it was held (``file_summary``)."""
    rows = []
    for found in files:
        content_hash, reason = summary[found.path]
        rows.append({
            "source": found.path, "content_hash": content_hash, "kind": kind, "size": found.size,
            "modified_at": found.mtime, "status": HELD if reason else INGESTED, C.COL_REASON: reason,
        })
    return rows


def checkpoint_id(checkpoint: str) -> str:
    """A random id kept beside the streaming checkpoint.

    It is part of the Delta transaction ids, so that a deleted (reset) checkpoint,
    whose batch ids start again at 0, is not mistaken for batches already committed.
    """
    import uuid

    import pyarrow.fs as pafs

    fs, path = pafs.FileSystem.from_uri(checkpoint)
    marker = f"{path}/interestlake-id"
    if fs.get_file_info(marker).type == pafs.FileType.File:
        with fs.open_input_stream(marker) as handle:
            return handle.read().decode().strip()
    fs.create_dir(path, recursive=True)
    ident = uuid.uuid4().hex[:12]
    # Written aside, then renamed: a run killed here must not leave a truncated id.
    with fs.open_output_stream(f"{marker}.{ident}.tmp") as handle:
        handle.write(ident.encode())
    fs.move(f"{marker}.{ident}.tmp", marker)
    return ident


def parse_landing(
    spark: SparkSession, kind: str, files: list[LandingFile], pseudonym: Pseudonymizer | None = None
) -> DataFrame:
    """Reads and validates landing files on executors, one task per file.

    Args:
        spark: Active session.
        kind: Landing kind of every file.
        files: The files.
        pseudonym: When set, user ids are replaced by their pseudonyms, in accepted
            rows and in the raw text of rejected ones (where it parses).

    Returns:
        The kind's table columns plus ``row_no``, ``reason``/``detail``/``raw``
        (``reason`` is null for accepted rows) and the file's ``content_hash``.
        Every file gives at least one row (a file without rows is rejected on row 0).
    """
    out_schema = _parse_schema(kind)
    paths = spark.createDataFrame(
        [(f.path, f.mtime) for f in files],
        "path string, mtime timestamp",
    )
    # One file per task: a large gzip cannot be split anyway, and a broken file fails alone.
    paths = paths.repartition(max(1, min(len(files), spark.sparkContext.defaultParallelism * 4)))
    return paths.mapInPandas(_parse_files(kind, out_schema, pseudonym), out_schema)


def _parse_schema(kind: str) -> T.StructType:
    """What parsing gives: the kind's table columns, all nullable (rejected rows have no typed values),
    and the parse columns."""
    spec = table_spec(kind)
    columns = [T.StructField(f.name, f.dataType, True) for f in spec.schema.fields if f.name not in _PROVENANCE]
    return T.StructType([*columns, T.StructField("source", T.StringType()), *_PARSE_COLUMNS])


def _parse_files(
    kind: str, out_schema: T.StructType, pseudonym: Pseudonymizer | None
) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """Builds the executor function; kept free of Spark objects so it pickles small."""
    timestamps = [f.name for f in out_schema.fields if isinstance(f.dataType, T.TimestampType)]
    texts = [f.name for f in out_schema.fields if isinstance(f.dataType, T.StringType)]

    def frame(rows: list[dict]) -> pd.DataFrame:
        # Columns absent from every row would come out as float NaN, which Arrow
        # cannot turn into strings or timestamps: give each its declared type.
        out = pd.DataFrame(rows).reindex(columns=out_schema.fieldNames())
        for name in texts:
            out[name] = out[name].astype(object).where(out[name].notna(), None)
        for name in timestamps:
            out[name] = pd.to_datetime(out[name])
        if C.COL_TRUNCATED in out:
            out[C.COL_TRUNCATED] = out[C.COL_TRUNCATED].astype(object).where(out[C.COL_TRUNCATED].notna(), None)
        return out

    def file_rows(path: str, written_at: datetime | None) -> Iterator[dict]:
        content_hash, checked = check_file(kind, path, written_at)
        for record in checked:
            row = {"source": path, "row_no": record.row_no, "raw": record.raw, "content_hash": content_hash,
                   "notes": list(record.notes) or None}
            if isinstance(record.result, V.Rejection):
                row.update(reason=record.result.reason, detail=record.result.detail)
                if pseudonym is not None:
                    row["raw"] = _pseudonymous_raw(record, pseudonym)
            else:
                row.update(record.result)
                if pseudonym is not None:
                    row[C.COL_USER_ID] = pseudonym(row[C.COL_USER_ID])
                # Items without updated_at take the file's time, which is
                # stable across re-reads (the ingest time would not be).
                if kind == C.ITEMS and row[C.COL_UPDATED_AT] is None and written_at is not None:
                    row[C.COL_UPDATED_AT] = written_at.replace(tzinfo=None)
            yield row

    def parse(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            for path, mtime in zip(batch["path"], batch["mtime"]):
                written_at = None if pd.isna(mtime) else mtime.to_pydatetime().replace(tzinfo=timezone.utc)
                # A frame per PARSE_BATCH_ROWS rows: a huge file never sits in memory whole.
                rows = []
                for row in file_rows(path, written_at):
                    rows.append(row)
                    if len(rows) == PARSE_BATCH_ROWS:
                        yield frame(rows)
                        rows = []
                if rows:
                    yield frame(rows)

    return parse


def _pseudonymous_raw(record: CheckedRow, pseudonym: Pseudonymizer) -> str | None:
    """A rejected row's raw text with its user id replaced, when the row is a JSON object with one."""
    import json

    if isinstance(record.record, dict) and record.record.get(C.COL_USER_ID) is not None:
        replaced = {**record.record, C.COL_USER_ID: pseudonym(str(record.record[C.COL_USER_ID]).strip())}
        return cap_raw(json.dumps(replaced, ensure_ascii=False, default=str))
    return record.raw


def _new_rows(lake: LakeTables, kind: str, accepted: DataFrame) -> DataFrame:
    """Rows of ``accepted`` not yet in the table, one per key.

    Events and reviews: the first occurrence of a key wins, later ones and keys
    the table already holds are duplicates. Items: the newest catalog row per
    item wins, and only when it is newer than the stored one.
    """
    spec = table_spec(kind)
    keys = list(spec.keys)
    if kind == C.ITEMS:
        # Latest catalog row per item: newest updated_at, then the latest file and line.
        order = [F.col(C.COL_UPDATED_AT).desc_nulls_last(), F.col("source").desc(), F.col("row_no").desc()]
    else:
        order = [F.col("source").asc(), F.col("row_no").asc()]
    ranked = accepted.withColumn("_n", F.row_number().over(Window.partitionBy(*keys).orderBy(*order)))
    first = ranked.filter("_n = 1").drop("_n", "row_no")
    existing = lake.read(kind)
    if kind == C.ITEMS:
        current = existing.select(C.COL_ITEM_ID, F.col(C.COL_UPDATED_AT).alias("_stored_at"))
        new = first.join(current, C.COL_ITEM_ID, "left").filter(
            F.col("_stored_at").isNull() | (F.col(C.COL_UPDATED_AT) > F.col("_stored_at"))
        )
        return new.drop("_stored_at")
    # The stored keys are probed with the batch's keys (the small side, hashed), not the
    # other way round: an anti join of the batch against the table would hash or
    # shuffle every key ever stored, on every run.
    present = existing.select(*keys).join(first.select(*keys), keys, "left_semi")
    return first.join(present, keys, "left_anti")
