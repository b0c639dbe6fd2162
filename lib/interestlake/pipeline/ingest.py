"""Ingest stage: landing files -> ``events``, ``reviews``, ``items`` and ``quarantine``.

Each landing row is validated on the executors; valid rows are deduplicated on
their key (the first occurrence wins, later ones are counted as duplicates) and
against what the tables already hold, rejected rows go to ``quarantine`` with
their source file, row number, reason and raw text.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timezone

import pandas as pd
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from interestlake import constants as C
from interestlake.datasets import validation as V
from interestlake.datasets.landing import LandingFile, landing_folder_exists, read_records
from interestlake.lake.schemas import table_spec
from interestlake.lake.tables import LakeTables, Txn
from interestlake.pipeline.run import RunContext, StageReport, log
from interestlake.settings import Settings

STAGE = "ingest"
_PARSE_COLUMNS = [
    T.StructField("row_no", T.LongType()),
    T.StructField("reason", T.StringType()),
    T.StructField("detail", T.StringType()),
    T.StructField("raw", T.StringType()),
]
_PROVENANCE = {"source", C.COL_RUN_ID, "ingested_at"}
# Only path, time and length are selected: the file contents are read by our own parser.
_BINARY_FILE_SCHEMA = "path string, modificationTime timestamp, length long, content binary"


def ingest(
    spark: SparkSession, lake: LakeTables, settings: Settings, run: RunContext, kinds: Sequence[str] = C.LANDING_KINDS
) -> StageReport:
    """Ingests the landing files not ingested before, exactly once.

    Each landing kind is a Structured Streaming file source (``binaryFile``,
    paths only) run with ``trigger(availableNow=True)`` and a checkpoint under
    ``<lake.root>/_checkpoints/ingest/<kind>``. Spark records which files make up
    micro-batch N before running it; every Delta commit of that batch carries
    the application transaction id (``interestlake.ingest.<kind>.<checkpoint id>``,
    N). A run that dies after committing but before Spark marked the batch done
    re-runs batch N with the same files on the next start, and the commits
    already made are skipped: no file is lost or ingested twice. Files that land
    during a run are left for the next one.

    Args:
        spark: Active session.
        lake: Table layer.
        settings: Loaded settings (``lake`` section).
        run: Run identity.
        kinds: Landing kinds to ingest (the catalog DAG ingests only ``items``);
            each kind keeps its own checkpoint, so the others wait for a later run.

    Returns:
        Counts of files and rows read, accepted, duplicated and quarantined (per reason).
    """
    unknown = sorted(set(kinds) - set(C.LANDING_KINDS))
    if unknown:
        raise ValueError(f"unknown landing kind(s) {unknown}; kinds are {list(C.LANDING_KINDS)}")
    report = StageReport(STAGE, run.run_id)
    for kind in kinds:
        folder = f"{settings.lake.landing_uri.rstrip('/')}/{kind}"
        report.counts[f"{kind}_files"] = 0
        if not landing_folder_exists(folder):
            continue
        checkpoint = f"{settings.lake.root.rstrip('/')}/_checkpoints/ingest/{kind}"
        app_id = f"interestlake.ingest.{kind}.{checkpoint_id(checkpoint)}"
        files = (
            spark.readStream.format("binaryFile")
            .schema(_BINARY_FILE_SCHEMA)
            .option("recursiveFileLookup", "true")
            # Spark ignores files older than this relative to the newest it saw; a
            # late copy of an old file must still be ingested.
            .option("maxFileAge", "3650d")
            .load(folder)
            # Epoch microseconds: collect() would hand back the driver's local time.
            .select("path", F.unix_micros("modificationTime").alias("mtime_us"), "length")
        )

        def ingest_batch(batch: DataFrame, batch_id: int, kind: str = kind, app_id: str = app_id) -> None:
            found = [
                LandingFile(r.path, r.length, datetime.fromtimestamp(r.mtime_us / 1e6, tz=timezone.utc))
                for r in batch.collect()
            ]
            if found:
                _ingest_files(spark, lake, kind, found, Txn(app_id, batch_id), run, report)

        query = (
            files.writeStream.foreachBatch(ingest_batch)
            .option("checkpointLocation", checkpoint)
            .trigger(availableNow=True)
            .queryName(f"interestlake_ingest_{kind}")
            .start()
        )
        query.awaitTermination()
    return report


def _ingest_files(
    spark: SparkSession, lake: LakeTables, kind: str, files: list[LandingFile], txn: Txn, run: RunContext,
    report: StageReport,
) -> None:
    """One micro-batch: parse, validate, dedupe and commit a set of landing files."""
    log.info("ingest: %d new %s file(s) (batch %d)", len(files), kind, txn.version)
    counts = report.counts
    counts[f"{kind}_files"] += len(files)
    parsed = parse_landing(spark, kind, files).persist()
    for row in parsed.groupBy("reason").count().collect():
        key = f"{kind}_accepted" if row["reason"] is None else f"{kind}_rejected_{row['reason']}"
        counts[key] = counts.get(key, 0) + row["count"]
    accepted = parsed.filter(F.col("reason").isNull()).drop("reason", "detail", "raw")
    new_rows, duplicates = _new_rows(lake, kind, accepted)
    counts[f"{kind}_duplicates"] = counts.get(f"{kind}_duplicates", 0) + duplicates
    rows = new_rows.withColumn(C.COL_RUN_ID, F.lit(run.run_id)).withColumn("ingested_at", F.lit(run.timestamp))
    metadata = {"stage": STAGE, "run_id": run.run_id, "batch": txn.version}
    write = lake.merge if kind == C.ITEMS else lake.append
    report.commits.append(write(kind, rows, txn=txn, metadata=metadata))
    rejected = (
        parsed.filter(F.col("reason").isNotNull())
        .select("source", "row_no", "reason", "detail", "raw", F.lit(kind).alias("kind"))
        .withColumn(C.COL_RUN_ID, F.lit(run.run_id))
        .withColumn("quarantined_at", F.lit(run.timestamp))
    )
    # The quarantine table has its own transaction id per kind: a batch that died
    # between the two commits redoes only the missing one.
    quarantine_txn = Txn(f"{txn.app_id}.quarantine", txn.version)
    report.commits.append(lake.append(C.QUARANTINE, rejected, txn=quarantine_txn, metadata=metadata))
    parsed.unpersist()


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


def parse_landing(spark: SparkSession, kind: str, files: list[LandingFile]) -> DataFrame:
    """Reads and validates landing files on executors, one task per file.

    Returns:
        The kind's table columns plus ``row_no``, and ``reason``/``detail``/``raw``
        (``reason`` is null for accepted rows).
    """
    spec = table_spec(kind)
    # Rejected rows have no typed values, so every parsed column is nullable.
    columns = [T.StructField(f.name, f.dataType, True) for f in spec.schema.fields if f.name not in _PROVENANCE]
    out_schema = T.StructType([*columns, T.StructField("source", T.StringType()), *_PARSE_COLUMNS])
    paths = spark.createDataFrame(
        [(f.path, f.mtime) for f in files],
        "path string, mtime timestamp",
    )
    # One file per task: a large gzip cannot be split anyway, and a broken file fails alone.
    paths = paths.repartition(max(1, min(len(files), spark.sparkContext.defaultParallelism * 4)))
    return paths.mapInPandas(_parse_files(kind, out_schema), out_schema)


def _parse_files(kind: str, out_schema: T.StructType) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
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
        return out

    def parse(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            for path, mtime in zip(batch["path"], batch["mtime"]):
                rows = []
                for record in read_records(path):
                    row = {"source": path, "row_no": record.row_no, "raw": record.raw}
                    result = record.rejection or V.validate_record(kind, record.record)
                    if isinstance(result, V.Rejection):
                        row.update(reason=result.reason, detail=result.detail)
                    else:
                        row.update(result)
                        # Items without updated_at take the file's time, which is
                        # stable across re-reads (the ingest time would not be).
                        if kind == C.ITEMS and row[C.COL_UPDATED_AT] is None and not pd.isna(mtime):
                            row[C.COL_UPDATED_AT] = mtime.to_pydatetime()
                    rows.append(row)
                if rows:
                    yield frame(rows)

    return parse


def _new_rows(lake: LakeTables, kind: str, accepted: DataFrame) -> tuple[DataFrame, int]:
    """Rows of ``accepted`` not yet in the table, one per key, and how many duplicates were dropped."""
    spec = table_spec(kind)
    keys = list(spec.keys)
    if kind == C.ITEMS:
        # Latest catalog row per item: newest updated_at, then the latest file and line.
        order = [F.col(C.COL_UPDATED_AT).desc_nulls_last(), F.col("source").desc(), F.col("row_no").desc()]
    else:
        # The first occurrence wins, later ones are duplicates.
        order = [F.col("source").asc(), F.col("row_no").asc()]
    ranked = accepted.withColumn("_n", F.row_number().over(Window.partitionBy(*keys).orderBy(*order)))
    first = ranked.filter("_n = 1").drop("_n", "row_no")
    duplicates = accepted.count() - first.count()
    existing = lake.read(kind)
    if kind == C.ITEMS:
        # Only rows newer than the stored catalog row replace it.
        current = existing.select(C.COL_ITEM_ID, F.col(C.COL_UPDATED_AT).alias("_stored_at"))
        new = first.join(current, C.COL_ITEM_ID, "left").filter(
            F.col("_stored_at").isNull() | (F.col(C.COL_UPDATED_AT) > F.col("_stored_at"))
        )
        return new.drop("_stored_at"), duplicates
    return first.join(existing.select(*keys), keys, "left_anti"), duplicates

