"""Ingest stage: landing files -> ``events``, ``reviews``, ``items`` and ``quarantine``.

Each landing row is validated on the executors; valid rows are deduplicated on
their key (the first occurrence wins, later ones are counted as duplicates) and
against what the tables already hold, rejected rows go to ``quarantine`` with
their source file, row number, reason and raw text.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pandas as pd
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from interestlake import constants as C
from interestlake.datasets import validation as V
from interestlake.datasets.landing import LandingFile, list_landing_files, read_records
from interestlake.lake.schemas import table_spec
from interestlake.lake.tables import LakeTables
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


def ingest(spark: SparkSession, lake: LakeTables, settings: Settings, run: RunContext) -> StageReport:
    """Loads every landing file of every kind and commits what is new.

    Args:
        spark: Active session.
        lake: Table layer to write to.
        settings: Loaded settings (landing folder).
        run: Run identity, recorded on every row and commit.

    Returns:
        Counts of rows read, accepted, duplicated, quarantined (per reason) and committed.
    """
    report = StageReport(STAGE, run.run_id)
    rejected_frames = []
    for kind in C.LANDING_KINDS:
        files = list_landing_files(settings.lake.landing_uri, kind)
        report.counts[f"{kind}_files"] = len(files)
        if not files:
            continue
        log.info("ingest: reading %d %s file(s) from %s", len(files), kind, settings.lake.landing_uri)
        parsed = parse_landing(spark, kind, files).persist()
        for row in parsed.groupBy("reason").count().collect():
            key = f"{kind}_accepted" if row["reason"] is None else f"{kind}_rejected_{row['reason']}"
            report.counts[key] = row["count"]
        accepted = parsed.filter(F.col("reason").isNull()).drop("reason", "detail", "raw")
        new_rows, duplicates = _new_rows(lake, kind, accepted)
        report.counts[f"{kind}_duplicates"] = duplicates
        rows = new_rows.withColumn(C.COL_RUN_ID, F.lit(run.run_id)).withColumn("ingested_at", F.lit(run.timestamp))
        metadata = {"stage": STAGE, "run_id": run.run_id}
        if kind == C.ITEMS:
            commit = lake.merge(kind, rows, txn=run.txn(STAGE), metadata=metadata)
        else:
            commit = lake.append(kind, rows, txn=run.txn(STAGE), metadata=metadata)
        report.commits.append(commit)
        rejected_frames.append(
            parsed.filter(F.col("reason").isNotNull()).select(
                "source", "row_no", "reason", "detail", "raw", F.lit(kind).alias("kind")
            )
        )
        parsed.unpersist()
    if rejected_frames:
        report.commits.append(_quarantine(lake, rejected_frames, run))
    return report


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
        [(f.path, f.mtime.replace(tzinfo=None) if f.mtime else None) for f in files],
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


def _quarantine(lake: LakeTables, frames: list[DataFrame], run: RunContext):
    rejected = frames[0]
    for frame in frames[1:]:
        rejected = rejected.unionByName(frame)
    # A landing row is quarantined once, by the first run that read it.
    known = lake.read(C.QUARANTINE).select("source", "row_no")
    rows = (
        rejected.join(known, ["source", "row_no"], "left_anti")
        .withColumn(C.COL_RUN_ID, F.lit(run.run_id))
        .withColumn("quarantined_at", F.lit(run.timestamp))
    )
    return lake.append(C.QUARANTINE, rows, txn=run.txn(STAGE), metadata={"stage": STAGE, "run_id": run.run_id})
