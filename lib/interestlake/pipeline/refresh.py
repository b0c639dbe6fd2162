"""The four stages in order, and the session they share."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from pyspark.sql import SparkSession

from interestlake.lake.tables import LakeTables, open_lake
from interestlake.pipeline.encode import encode
from interestlake.pipeline.ingest import ingest
from interestlake.pipeline.interests import interests
from interestlake.pipeline.recommend import recommend
from interestlake.pipeline.run import RunContext, StageReport, log
from interestlake.settings import Settings
from interestlake.spark_session import build_spark_session

Stage = Callable[[SparkSession, LakeTables, Settings, RunContext], StageReport]
STAGES: dict[str, Stage] = {"ingest": ingest, "encode": encode, "interests": interests, "recommend": recommend}


@dataclass
class Pipeline:
    """A Spark session and the lake it writes, for one job or command."""

    spark: SparkSession
    lake: LakeTables
    settings: Settings

    def run_stage(self, name: str, run: RunContext) -> StageReport:
        """Runs one stage, logging its duration and summary."""
        try:
            stage = STAGES[name]
        except KeyError:
            raise ValueError(f"unknown stage {name!r}; stages are {list(STAGES)}") from None
        started = time.monotonic()
        log.info("%s: started (run %s)", name, run.run_id)
        report = stage(self.spark, self.lake, self.settings, run)
        report.counts["seconds"] = round(time.monotonic() - started, 1)
        log.info("%s: done in %.1fs", name, report.counts["seconds"])
        return report

    def refresh(self, run: RunContext) -> list[StageReport]:
        """ingest -> encode -> interests -> recommend."""
        return [self.run_stage(name, run) for name in STAGES]


@contextmanager
def open_pipeline(settings: Settings, master: str | None = None) -> Iterator[Pipeline]:
    """Builds the session, creates missing lake tables, and stops the session afterwards.

    A session that was already active (a test's, a notebook's) is reused and left running.
    """
    owned = SparkSession.getActiveSession() is None
    spark = build_spark_session(settings, master)
    try:
        lake = open_lake(spark, settings.lake)
        lake.ensure_tables()
        yield Pipeline(spark, lake, settings)
    finally:
        if owned:
            spark.stop()
