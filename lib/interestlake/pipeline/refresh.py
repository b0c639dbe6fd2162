"""The four stages in order, and the session they share."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone

from pyspark.sql import SparkSession

from interestlake import constants as C
from interestlake.lake.lock import writer_lock
from interestlake.lake.tables import LakeHistoryGone, LakeTables, open_lake
from interestlake.pipeline.encode import encode
from interestlake.pipeline.ingest import ingest
from interestlake.pipeline.interests import interests
from interestlake.pipeline.recommend import recommend
from interestlake.pipeline.run import RunContext, StageReport, log
from interestlake.settings import Settings
from interestlake.spark_session import spark_session

Stage = Callable[..., StageReport]
STAGES: dict[str, Stage] = {"ingest": ingest, "encode": encode, "interests": interests, "recommend": recommend}
# Stages that can recompute everything instead of only what changed.
FULL_RECOMPUTE = {"interests", "recommend"}


@dataclass
class Pipeline:
    """A Spark session and the lake it writes, for one job or command."""

    spark: SparkSession
    lake: LakeTables
    settings: Settings
    # Registered model versions this run uses ({"model:<name>": version}), recorded
    # with every stage in pipeline_runs.read_versions.
    model_versions: dict[str, int] = field(default_factory=dict)

    def run_stage(self, name: str, run: RunContext, full: bool = False) -> StageReport:
        """Runs one stage and records it in ``pipeline_runs`` (failed runs too).

        Args:
            name: Stage name.
            run: Run identity.
            full: Recompute everything (interests and recommend) instead of only what changed.

        An incremental run whose last run's input versions are gone from the Delta log
        (a pipeline paused for longer than the log retention) is redone in full.
        """
        return self.recorded(name, run, self.stage_work(name, run, full))

    def stage_work(self, name: str, run: RunContext, full: bool = False) -> Callable[[], StageReport]:
        """The work of ``run_stage`` unrecorded, for a caller that records it itself (``recorded``)."""
        try:
            stage = STAGES[name]
        except KeyError:
            raise ValueError(f"unknown stage {name!r}; stages are {list(STAGES)}") from None

        def call(full: bool) -> StageReport:
            return stage(self.spark, self.lake, self.settings, run, **({"full": full} if name in FULL_RECOMPUTE else {}))

        def work() -> StageReport:
            try:
                return call(full)
            except LakeHistoryGone as exc:
                if full or name not in FULL_RECOMPUTE:
                    raise
                # Raised while reading what changed, before the stage wrote its table:
                # the full recompute is the same run of the stage, recorded once.
                log.warning("%s: %s; recomputing in full", name, exc)
                report = call(True)
                report.note = "; ".join(filter(None, [f"recomputed in full: {exc}", report.note]))
                return report

        return work

    def recorded(self, name: str, run: RunContext, work: Callable[[], StageReport]) -> StageReport:
        """Runs ``work`` (a stage, or a command such as ``forget``) and records it in ``pipeline_runs``.

        Failed runs are recorded too, with the error as the note, so every write to the
        lake leaves a row saying who wrote what from which versions.
        """
        started = datetime.now(timezone.utc)
        log.info("%s: started (run %s)", name, run.run_id)
        try:
            report = work()
        except Exception as exc:
            self._record(StageReport(name, run.run_id, note=f"{type(exc).__name__}: {exc}"[:2000]), run, started, "failed")
            raise
        report.counts["seconds"] = round((datetime.now(timezone.utc) - started).total_seconds(), 1)
        self._record(report, run, started, "succeeded")
        log.info("%s: done in %.1fs", name, report.counts["seconds"])
        return report

    def refresh(self, run: RunContext, full: bool = False) -> list[StageReport]:
        """ingest -> encode -> interests -> recommend."""
        return [self.run_stage(name, run, full) for name in STAGES]

    def _record(self, report: StageReport, run: RunContext, started: datetime, status: str) -> None:
        """Upserts the (run_id, stage) row of ``pipeline_runs``: a re-run replaces it."""
        row = {
            C.COL_RUN_ID: run.run_id,
            "stage": report.stage,
            "logical_date": run.timestamp,
            "status": status,
            "params": report.params,
            "started_at": started,
            "finished_at": datetime.now(timezone.utc),
            "counts": {k: int(v) for k, v in report.counts.items()},
            "read_versions": {**report.read_versions, **self.model_versions},
            "written_versions": report.written_versions,
            "note": report.note,
        }
        self.lake.upsert_rows(C.PIPELINE_RUNS, [row], metadata={"stage": report.stage, "run_id": run.run_id})


def resolve_models(settings: Settings) -> tuple[Settings, dict[str, int]]:
    """Settings whose encoder and interest model name concrete versions, and those registered versions.

    An encoder given as a registered model (``models:/NAME@ALIAS``) and the interest
    model (``model.uri``; by default the champion when one is registered, else the
    untrained pooling) are resolved once, to the versions every stage then uses.

    Returns:
        (the settings, ``{"encoder:...": version, "model:<name>": version}`` of the registered ones).
    """
    from interestlake.models.interest_registry import resolve_model
    from interestlake.models.registry import resolve_settings

    settings, encoder = resolve_settings(settings)
    versions = {encoder.record_key: encoder.version} if encoder else {}
    settings, model_version = resolve_model(settings)
    if model_version is not None:
        versions[f"model:{settings.model.name}"] = model_version
    return settings, versions


@contextmanager
def open_pipeline(
    settings: Settings, master: str | None = None, writer: str | None = None, wait_seconds: float = 0.0,
    jobs: Sequence[str] = (),
    ensure_tables: bool = True,
) -> Iterator[Pipeline]:
    """Builds the session, creates missing lake tables, and stops the session afterwards.

    Args:
        settings: Loaded settings.
        master: Overrides ``spark.master``.
        writer: When set (a run id), holds the lake's single-writer lock under this name.
        wait_seconds: How long to wait for that lock.
        jobs: The jobs the session will run, whose ``spark.stage_conf`` it gets.
        ensure_tables: Create missing tables and refuse a lake of an earlier layout (saying to
            run ``interestlake upgrade``); off only for ``upgrade`` itself.

    A session that was already active (a test's, a notebook's) is reused and left running.
    An encoder given as a registered model (``models:/NAME@ALIAS``) is resolved here,
    once, to the version every stage of this pipeline uses; so is the interest
    model (``model.uri``; by default the champion when one is registered, else
    the untrained pooling).
    """
    from interestlake.privacy import pseudonymizer

    # A missing pseudonymisation key is a settings error: found before Spark starts.
    pseudonymizer(settings)
    settings, versions = resolve_models(settings)
    with ExitStack() as stack:
        if writer is not None:
            # Taken before Spark starts: a second refresh gives up in a second.
            stack.enter_context(writer_lock(settings.lake.root, writer, wait_seconds))
        spark = stack.enter_context(spark_session(settings, master, jobs))
        lake = open_lake(spark, settings.lake)
        if ensure_tables:
            lake.ensure_tables()
        yield Pipeline(spark, lake, settings, versions)
