"""Run identity and stage reports shared by all stages."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from interestlake import constants as C
from interestlake.lake.tables import CommitResult, Txn
from interestlake.models.feedback import dislike_rule
from interestlake.settings import Settings

log = logging.getLogger("interestlake")


@dataclass(frozen=True)
class RunContext:
    """Identifies one pipeline run.

    A retried run passes the same ``logical_date``: its commits carry the same
    application transaction versions and are therefore no-ops once committed.

    Args:
        run_id: Free-form id recorded in the tables (Airflow's run id, or one made by the CLI).
        logical_date: The run's logical time (timezone-aware).
    """

    run_id: str
    logical_date: datetime

    def __post_init__(self):
        if self.logical_date.tzinfo is None:
            raise ValueError(f"logical_date must be timezone-aware, got {self.logical_date.isoformat()}")
        if not self.run_id.strip():
            raise ValueError("run_id must not be empty")

    @classmethod
    def create(cls, run_id: str | None = None, logical_date: datetime | str | None = None) -> RunContext:
        """Builds a run context, defaulting to "now" and a ``manual__<time>`` id like Airflow's."""
        if isinstance(logical_date, str):
            try:
                logical_date = datetime.fromisoformat(logical_date.replace("Z", "+00:00"))
            except ValueError:
                raise ValueError(f"logical date {logical_date!r} is not ISO-8601 (e.g. 2026-11-23T10:00:00Z)") from None
        when = logical_date or datetime.now(timezone.utc)
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        return cls(run_id or f"manual__{when.isoformat()}", when)

    def txn(self, stage: str) -> Txn:
        """Application transaction id of one stage's commits in this run."""
        return Txn(f"interestlake.{stage}", int(self.logical_date.timestamp() * 1_000_000))

    @property
    def timestamp(self) -> datetime:
        """The logical date in UTC, timezone-aware: PySpark would read a naive one as the
        driver's local time, which is wrong wherever that is not UTC."""
        return self.logical_date.astimezone(timezone.utc)


@dataclass
class StageReport:
    """What one stage did: counts for people, commits for the record."""

    stage: str
    run_id: str
    counts: dict[str, int] = field(default_factory=dict)
    commits: list[CommitResult] = field(default_factory=list)
    note: str | None = None
    read_versions: dict[str, int] = field(default_factory=dict)
    params: str | None = None

    @property
    def written_versions(self) -> dict[str, int]:
        """Table -> version this stage committed (tables it left alone are absent)."""
        return {c.table: c.version for c in self.commits if c.committed}

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, default=str)

    def summary(self) -> str:
        parts = [f"{k}={v}" for k, v in self.counts.items()]
        for commit in self.commits:
            if commit.committed:
                parts.append(f"{commit.table}@v{commit.version}(+{commit.rows} rows)")
            else:
                parts.append(f"{commit.table}: {commit.skipped}")
        if self.note:
            parts.append(self.note)
        return f"[{self.stage}] " + ", ".join(parts)



@dataclass(frozen=True)
class DerivedInputs:
    """What a derived table would be computed from now, and what its last commit was computed from.

    The last commit's inputs are stored in that commit (atomic with its data), so
    a stage that died before committing is redone from the right versions.
    """

    tables: dict[str, int]
    params: str
    previous: dict[str, Any] | None

    @property
    def fingerprint(self) -> dict[str, Any]:
        """Recorded in the commit's metadata under ``inputs``."""
        return {"tables": self.tables, "params": self.params}

    @property
    def unchanged(self) -> bool:
        return self.previous == self.fingerprint

    @property
    def same_params(self) -> bool:
        return self.previous is not None and self.previous.get("params") == self.params

    def since(self, table: str) -> int | None:
        """Version of an input the last commit had read (None: everything is new)."""
        return (self.previous or {}).get("tables", {}).get(table)


def derived_inputs(lake, report: StageReport, output: str, inputs: Iterable[str], params: dict[str, Any]) -> DerivedInputs:
    """Pins the input versions of a stage and looks up those of its last commit to ``output``."""
    tables = lake.versions(inputs)
    last = lake.last_metadata(output, stage=report.stage)
    report.read_versions = dict(tables)
    report.params = params_digest(params)
    return DerivedInputs(tables, report.params, last.get("inputs") if last else None)


# The stages that can gather a batch on the driver; ``driver_path`` holds each one's rules.
DRIVER_STAGES = ("ingest", "encode", "interests", "recommend", "topics")


def driver_path(
    stage: str, lake, settings: Settings | None, *, since: Mapping[str, int | None] | None = None,
    now: Mapping[str, int] | None = None, landing_bytes: int = 0, kind: str | None = None,
    whole_histories: bool = False,
) -> bool:
    """Whether a stage gathers this batch on the driver (Arrow reads) or in Spark jobs.

    The one place that decides, for every stage of a batch. The driver path needs
    ``small_batch.enabled`` and the delta-rs backend: the driver reads table files as
    Parquet, which would not apply the deletion vectors a delta-spark writer may add.
    Then, per stage:

    - ``ingest``: an event or review micro-batch (never items) whose landing files are within
      ``small_batch.max_landing_mb`` as stored (``landing_bytes``, ``kind``);
    - every other stage: an incremental run (``since``: the input versions its last run
      read; None for a first run, a full run or a parameter change) with few new events
      and reviews (``few_new_rows``), and besides
      - ``encode``: the catalog unchanged (a new catalog re-encodes item texts on Spark);
      - ``interests``: no item vector changed (its users' whole histories are rebuilt), no
        dislike rule (``steer.negative``: both readers now derive dislikes with the same Arrow
        functions, tested both ways in tests/spark/test_gatherers.py, but the end-to-end small-batch
        steering test runs without it, so such batches still go to Spark) and
        no rebuild of whole histories (``whole_histories``: a model with a long-term part,
        whose running sum is not stored);
      - ``recommend``: no dislike rule;
      - ``topics``: nothing more.

    Args:
        stage: One of ``DRIVER_STAGES``.
        lake: Table layer (its backend, and the Delta log's row counts).
        settings: Loaded settings (``small_batch``, ``steer``); None: Spark.
        since: Input versions the stage's last run read (None: not an incremental run).
        now: Input versions this run reads.
        landing_bytes: Size of an ingest micro-batch's landing files.
        kind: Landing kind of an ingest micro-batch.
        whole_histories: ``interests`` rebuilds every changed user from their whole history.
    """
    if stage not in DRIVER_STAGES:
        raise ValueError(f"unknown stage {stage!r} for the small-batch decision; stages are {list(DRIVER_STAGES)}")
    if settings is None or not settings.small_batch.enabled or lake.lake.backend != "delta-rs":
        return False
    if stage == "ingest":
        return kind != C.ITEMS and landing_bytes <= settings.small_batch.max_landing_mb * 2**20
    if since is None or now is None:
        return False
    if stage == "encode" and since.get(C.ITEMS) != now[C.ITEMS]:
        return False
    if stage == "interests" and (whole_histories or since.get(C.ITEM_EMBEDDINGS) != now[C.ITEM_EMBEDDINGS]):
        return False
    if stage in ("interests", "recommend") and dislike_rule(settings.steer) is not None:
        return False
    return few_new_rows(lake, settings, since, now)


def few_new_rows(lake, settings, since: Mapping[str, int | None], now: Mapping[str, int]) -> bool:
    """True when ``small_batch`` is on and few enough events and reviews were written since ``since``.

    Part of ``driver_path``'s decision (ask that, not this). Only with the delta-rs
    backend. Rows are counted from the Delta log's statistics; files without a row count
    make the batch go to Spark.
    """
    conf = settings.small_batch
    tables = (C.EVENTS, C.REVIEWS)
    if not conf.enabled or settings.lake.backend != "delta-rs" or any(since.get(table) is None for table in tables):
        return False
    counts = [lake.added_rows(table, since[table], now[table]) for table in tables]
    return None not in counts and sum(counts) <= conf.max_new_rows


def params_digest(params: dict[str, Any]) -> str:
    """Short stable hash of a stage's parameters: a change means recomputing from scratch."""
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:16]


def last_progress(lake, stage: str, params: str) -> dict[str, int] | None:
    """Input versions the last successful run of a stage read, under the same parameters.

    For stages whose progress needs no atomicity with their data (re-reading a
    little more after a crash is harmless), so that a run which commits nothing
    still records how far it read.
    """
    runs = lake.read_rows(
        C.PIPELINE_RUNS,
        filters=[("stage", "=", stage), ("status", "=", "succeeded"), ("params", "=", params)],
        columns=["finished_at", "read_versions"],
    )
    if not runs:
        return None
    latest = max(runs, key=lambda run: run["finished_at"])
    return dict(latest["read_versions"])
