"""Table maintenance: row retention, compaction, vacuum and checkpoints.

Run daily by ``interestlake maintain`` (the ``interestlake_maintenance`` DAG)
while it holds the lake's writer lock, so no stage writes in between. Every
step goes through delta-rs, which maintains any Delta table whoever wrote it.

Vacuum never deletes a file that a reader of the last hour may read (files are
deleted only once removed for ``maintenance.vacuum_retention_hours`` >= 1) nor
one that the next incremental run needs: the stages read what changed since the
input versions their last run recorded, including the rows of files removed
since, so every file of those versions is kept whatever its age.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

from pyspark.sql import Window
from pyspark.sql import functions as F

from interestlake import constants as C
from interestlake.lake.schemas import TABLES
from interestlake.lake.tables import LakeTables
from interestlake.pipeline.run import log
from interestlake.settings import Settings

@dataclass
class MaintenanceReport:
    """What one step did to one table."""

    step: str
    table: str
    counts: dict[str, int] = field(default_factory=dict)
    version: int | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    def summary(self) -> str:
        counts = ", ".join(f"{k}={v}" for k, v in self.counts.items()) or "nothing to do"
        return f"[{self.step}] {self.table}@v{self.version}: {counts}"


def maintain(
    lake: LakeTables,
    settings: Settings,
    now: datetime,
    steps: Sequence[str] = C.MAINTENANCE_STEPS,
    tables: Iterable[str] | None = None,
) -> list[MaintenanceReport]:
    """Runs the maintenance steps, in the order of ``MAINTENANCE_STEPS``, over the lake tables.

    Args:
        lake: Table layer of the lake (its writer lock must be held).
        settings: Loaded settings (``maintenance`` section).
        now: Reference time of the retention cutoffs (the run's logical date, so
            that a retried run deletes exactly what the first try would have).
        steps: Any of ``constants.MAINTENANCE_STEPS``.
        tables: Tables to compact, vacuum and checkpoint (default: all).

    Returns:
        One report per step and table.
    """
    unknown = sorted(set(steps) - set(C.MAINTENANCE_STEPS))
    if unknown:
        raise ValueError(f"unknown maintenance step(s) {unknown}; steps are {list(C.MAINTENANCE_STEPS)}")
    names = list(tables or TABLES)
    missing = sorted(set(names) - set(TABLES))
    if missing:
        raise ValueError(f"unknown lake table(s) {missing}; tables are {sorted(TABLES)}")
    reports: list[MaintenanceReport] = []
    if "retention" in steps:
        reports += apply_retention(lake, settings, now)
    if "compact" in steps:
        reports += [compact(lake, name) for name in names]
    if "vacuum" in steps:
        in_use = versions_in_use(lake)
        retention = settings.maintenance.vacuum_retention_hours
        reports += [vacuum(lake, name, retention, in_use.get(name, set())) for name in names]
    if "checkpoint" in steps:
        reports += [checkpoint(lake, name) for name in names]
    return reports


def apply_retention(lake: LakeTables, settings: Settings, now: datetime) -> list[MaintenanceReport]:
    """Deletes ``quarantine``, ``pipeline_runs`` and ``landing_files`` rows older than their retention.

    The last successful run of each stage (per parameter digest) is kept in
    ``pipeline_runs`` whatever its age: the encode stage continues from it. Every
    ``landing_files`` row of a file whose newest record is held is kept: ingest
    compares the file with it to retry it once it changed.
    """
    from interestlake.pipeline.ingest import held_files

    policy = settings.maintenance
    quarantine_cutoff = now - timedelta(days=policy.quarantine_retention_days)
    runs_cutoff = now - timedelta(days=policy.pipeline_runs_retention_days)
    files_cutoff = now - timedelta(days=policy.landing_files_retention_days)
    held = ", ".join(_sql_string(row["source"]) for row in held_files(lake))
    keep = " OR ".join(
        f"(run_id = {_sql_string(row[C.COL_RUN_ID])} AND stage = {_sql_string(row['stage'])})"
        for row in last_successful_runs(lake)
    )
    predicates = {
        C.QUARANTINE: f"quarantined_at < {_sql_timestamp(quarantine_cutoff)}",
        C.PIPELINE_RUNS: f"finished_at < {_sql_timestamp(runs_cutoff)}" + (f" AND NOT ({keep})" if keep else ""),
        C.LANDING_FILES: f"recorded_at < {_sql_timestamp(files_cutoff)}" + (f" AND source NOT IN ({held})" if held else ""),
    }
    reports = []
    for table, predicate in predicates.items():
        delta = _delta_table(lake, table)
        metrics = delta.delete(predicate)
        reports.append(
            MaintenanceReport("retention", table, {"rows_deleted": metrics["num_deleted_rows"]}, delta.version())
        )
    return reports


def compact(lake: LakeTables, table: str) -> MaintenanceReport:
    """Rewrites small files into larger ones (delta-rs ``optimize.compact``); rows are unchanged."""
    delta = _delta_table(lake, table)
    metrics = delta.optimize.compact()
    counts = {"files_removed": metrics["numFilesRemoved"], "files_added": metrics["numFilesAdded"]}
    return MaintenanceReport("compact", table, counts, delta.version())


def vacuum(lake: LakeTables, table: str, retention_hours: int, keep_versions: Iterable[int]) -> MaintenanceReport:
    """Deletes files removed from the table more than ``retention_hours`` ago.

    Args:
        lake: Table layer.
        table: Table name.
        retention_hours: Minimum age of a removal (the settings enforce >= 1).
        keep_versions: Versions whose files are kept whatever their age
            (those the stages' next incremental runs read from). A version no longer
            in the Delta log is left out: no run can read from it (the stage
            recomputes in full instead), and delta-rs refuses to keep it.
    """
    import pyarrow.fs as pafs

    delta = _delta_table(lake, table)
    keep = sorted(v for v in keep_versions if v <= delta.version() and lake.has_version(table, v))
    options = {
        "retention_hours": retention_hours,
        # Our own floor (>= 1 hour, settings) replaces the table's 7-day default.
        "enforce_retention_duration": False,
        "keep_versions": keep or None,
    }
    # The log keeps listing removed files after they are gone: vacuum only when one
    # still exists, since every vacuum commits (VACUUM START/END) a new table version.
    fs, root = pafs.FileSystem.from_uri(lake.uri(table))
    candidates = delta.vacuum(dry_run=True, **options)
    present = [p for p in candidates if fs.get_file_info(f"{root.rstrip('/')}/{p}").type != pafs.FileType.NotFound]
    counts = {"files_deleted": 0, "versions_kept": len(keep)}
    if present:
        counts["files_deleted"] = len(delta.vacuum(dry_run=False, **options))
        log.info("vacuum: %s: deleted %d file(s)", table, counts["files_deleted"])
    return MaintenanceReport("vacuum", table, counts, delta.version())


def checkpoint(lake: LakeTables, table: str) -> MaintenanceReport:
    """Writes a checkpoint of the latest version, so readers replay fewer log files."""
    delta = _delta_table(lake, table)
    delta.create_checkpoint()
    return MaintenanceReport("checkpoint", table, {"checkpoints_written": 1}, delta.version())


def versions_in_use(lake: LakeTables) -> dict[str, set[int]]:
    """Table -> input versions that the next incremental run of some stage reads from.

    These are the inputs recorded in the last commit of each stage to each table
    (interests, recommend) and the versions read by the last successful run of
    each stage (encode continues from those).
    """
    from interestlake.pipeline.refresh import STAGES

    in_use: dict[str, set[int]] = {}

    def add(versions: dict | None) -> None:
        for table, version in (versions or {}).items():
            in_use.setdefault(table, set()).add(int(version))

    for table in TABLES:
        for stage in STAGES:
            meta = lake.last_metadata(table, stage=stage)
            add(((meta or {}).get("inputs") or {}).get("tables"))
    for row in last_successful_runs(lake):
        add(row["read_versions"])
    return in_use


def last_successful_runs(lake: LakeTables) -> list[dict]:
    """The newest succeeded ``pipeline_runs`` row per pipeline stage and parameter digest.

    Only the refresh stages continue from a previous run; other recorded commands
    (``forget``) must not keep the versions they read from being vacuumed.
    """
    from interestlake.pipeline.refresh import STAGES

    newest = Window.partitionBy("stage", "params").orderBy(F.col("finished_at").desc())
    rows = (
        lake.read(C.PIPELINE_RUNS)
        .filter((F.col("status") == "succeeded") & F.col("stage").isin(list(STAGES)))
        .withColumn("_n", F.row_number().over(newest))
        .filter("_n = 1")
        .select(C.COL_RUN_ID, "stage", "read_versions")
        .collect()
    )
    return [row.asDict() for row in rows]


def _delta_table(lake: LakeTables, table: str):
    from deltalake import DeltaTable

    return DeltaTable(lake.uri(table), storage_options=lake.lake.storage_options or None)


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _sql_timestamp(when: datetime) -> str:
    if when.tzinfo is None:
        raise ValueError(f"cutoff {when.isoformat()} must be timezone-aware")
    return _sql_string(when.isoformat())
