"""Continuous mode: one long-running Spark application that takes each landing file to recommendations.

``interestlake stream`` runs the landing source of ``ingest`` (same file source, same
checkpoint, same transaction ids) with a processing-time trigger instead of
``availableNow``; for each micro-batch, in ``foreachBatch``, it runs ingest -> encode ->
interests -> recommend on what arrived, through the same stage functions and the same
``pipeline_runs`` records as ``refresh``. Between batches the Spark session, the Python
workers (which keep the encoder and the staged item matrix loaded) and the resolved models
stay warm.

It holds the lake's writer lock for as long as it runs, and lets a writer that waits for
the lock (``maintain``, a catalog DAG job, ``forget``) have a turn between batches. A
SIGTERM or SIGINT stops it after the current batch; a SIGKILL at any moment is safe: Spark
replays the unfinished micro-batch with the same files on the next start and every commit
already made is skipped (ingest's transaction ids; the derived stages' recorded inputs).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from interestlake import constants as C
from interestlake.datasets.landing import LandingFile
from interestlake.lake.errors import LakeError
from interestlake.lake.lock import STREAM_OWNER_PREFIX, LakeBusyError, StreamPresence, WriterLock, turn_requests
from interestlake.pipeline.refresh import STAGES, Pipeline, resolve_models
from interestlake.pipeline.run import RunContext, StageReport
from interestlake.settings import Settings

log = logging.getLogger("interestlake.stream")
DERIVED_STAGES = tuple(name for name in STAGES if name != "ingest")
# Settings a running stream cannot change: the session, the lake and the trigger are fixed at start.
RESTART_SECTIONS = ("lake", "spark", "stream")
# Every batch adds a small file to each bookkeeping table (four pipeline_runs rows, its
# landing_files rows); the stream compacts them every this many batches, between two batches,
# so that reading them does not slow down until the daily maintenance.
COMPACT_EVERY_BATCHES = 100
BOOKKEEPING_TABLES = (C.PIPELINE_RUNS, C.LANDING_FILES)
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StreamStopped(Exception):
    """Raised in a micro-batch that starts after a stop was asked: Spark leaves it for the next start."""


class StreamFailed(LakeError):
    """The streaming query ended with an error (recorded in ``pipeline_runs`` when a stage failed)."""


class _Turns:
    """Who works on the lake now: a micro-batch (Spark's thread) or the main loop, one at a time.

    After ``stop()`` no new work starts: a micro-batch that comes then raises ``StreamStopped``
    instead of waiting, so that stopping the query never waits for a batch that waits for us.
    """

    def __init__(self):
        self._cond = threading.Condition()
        self._busy = False
        self.stopping = False

    def begin(self, wait: bool = True) -> bool:
        """Takes the turn (waiting for the other side when ``wait``); False once stopping, or busy and not waiting."""
        with self._cond:
            while self._busy and not self.stopping and wait:
                self._cond.wait()
            if self.stopping or self._busy:
                return False
            self._busy = True
            return True

    def end(self) -> None:
        with self._cond:
            self._busy = False
            self._cond.notify_all()

    def stop(self) -> None:
        """Lets no new work start and waits for the work in progress to end."""
        with self._cond:
            self.stopping = True
            self._cond.notify_all()
            while self._busy:
                self._cond.wait()


class Stream:
    """One ``interestlake stream`` process: its lock, session, query and main loop.

    Args:
        settings: Settings as loaded (models not yet resolved).
        master: Overrides ``spark.master``.
        wait_seconds: How long to wait for the lake's writer lock at start.
        reload: Loads the settings again (the conf file may have changed); None: only the
            models are looked up again between batches.
    """

    def __init__(
        self, settings: Settings, master: str | None = None, wait_seconds: float = 0.0,
        reload: Callable[[], Settings] | None = None,
    ):
        self.loaded = settings
        self.reload = reload
        self.master = master
        self.wait_seconds = wait_seconds
        self.started = datetime.now(timezone.utc)
        self.owner = f"{STREAM_OWNER_PREFIX}__{self.started.isoformat(timespec='seconds')}"
        self.lock = WriterLock(settings.lake.root, self.owner)
        # Held for the whole run, also while the writer lock is lent: ingest leaves the checkpoint alone.
        self.presence = StreamPresence(settings.lake.root, self.owner)
        self.turns = _Turns()
        self.stop_asked = threading.Event()
        self.pipeline: Pipeline | None = None
        self.batches = 0
        self.compact_every = COMPACT_EVERY_BATCHES
        self._compacted_at = 0
        # Set when a stop came while another writer had its turn: the query then ends from
        # inside a batch (it must not write without the lock), which is a clean stop, not a failure.
        self._stopped_during_turn = False
        self._last_check = time.monotonic()

    def run(self) -> int:
        """Runs until SIGTERM/SIGINT (or ``stop_asked``); returns the number of micro-batches processed."""
        from interestlake.pipeline.ingest import landing_source
        from interestlake.privacy import pseudonymizer
        from interestlake.spark_session import spark_session
        from interestlake.lake.tables import open_lake

        pseudonymizer(self.loaded)  # a missing key is a settings error, before Spark starts
        settings, versions = resolve_models(self.loaded)
        _make_landing_folders(settings)
        # Taken before Spark starts: a stream that finds the lake busy gives up in a second.
        self.lock.acquire(self.wait_seconds)
        try:
            self.presence.acquire()
        except LakeBusyError:
            self.lock.release()
            raise
        main = threading.current_thread() is threading.main_thread()
        previous = {signum: signal.getsignal(signum) for signum in _STOP_SIGNALS} if main else {}
        if main:
            # Ignored while the JVM starts, which keeps it ignored: a SIGTERM sent to the whole
            # process group (systemd's default, `timeout`) must not end Spark under a batch.
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            with spark_session(settings, self.master, STAGES) as spark:
                if main:
                    self._handle_signals()
                lake = open_lake(spark, settings.lake)
                lake.ensure_tables()
                self.pipeline = Pipeline(spark, lake, settings, versions)
                # Whatever an earlier run left undone (a killed change pass, a lake that was only ingested).
                self._derived(RunContext.create(f"{self.owner}__start", self.started), [])
                source = landing_source(spark, settings)
                if source is None:
                    raise LakeError(f"no landing folder under {settings.lake.landing_uri}: create events/, reviews/ or items/ there")
                query = (
                    source.files.writeStream.foreachBatch(lambda batch, batch_id: self._batch(source, batch, batch_id))
                    .option("checkpointLocation", source.checkpoint)
                    .trigger(processingTime=f"{int(settings.stream.trigger_seconds * 1000)} milliseconds")
                    .queryName("interestlake_stream")
                    .start()
                )
                log.info("stream: watching %s every %ss (lake %s; stop with SIGTERM or Ctrl-C)",
                         settings.lake.landing_uri, settings.stream.trigger_seconds, settings.lake.root)
                self._main_loop(query)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            self.lock.release()
            self.presence.release()
        log.info("stream: stopped after %d batch(es)", self.batches)
        return self.batches

    def _main_loop(self, query) -> None:
        from pyspark.errors import StreamingQueryException

        poll = min(0.5, self.loaded.stream.trigger_seconds)
        try:
            while not self.stop_asked.is_set():
                if query.awaitTermination(poll):
                    break
                if time.monotonic() - self._last_check >= self.loaded.stream.trigger_seconds and self.turns.begin(wait=False):
                    try:
                        self._between_batches()
                    except StreamStopped:
                        break
                    finally:
                        self.turns.end()
        except StreamingQueryException as exc:
            if not self.turns.stopping and not self._stopped_during_turn:
                log.error("stream: the query failed: %s", exc)
                raise StreamFailed(f"the stream stopped on an error: {str(exc).splitlines()[0]}") from None
        log.info("stream: stopping after the current batch")
        self.turns.stop()
        query.stop()

    def _batch(self, source, batch, batch_id: int) -> None:
        """``foreachBatch``: the four stages on micro-batch ``batch_id``."""
        from interestlake.pipeline.ingest import ingest_micro_batch, ingest_report, retry_held_files
        from interestlake.privacy import pseudonymizer

        if not self.turns.begin():
            raise StreamStopped(f"stopping: micro-batch {batch_id} is left for the next start")
        try:
            self._apply_changes()
            pipeline = self.pipeline
            run = RunContext.create(f"{STREAM_OWNER_PREFIX}__{source.ident}__{batch_id}")
            found: list[LandingFile] = []

            def ingest_work() -> StageReport:
                report = ingest_report(run)
                pseudonym = pseudonymizer(pipeline.settings)
                found.extend(ingest_micro_batch(pipeline.spark, pipeline.lake, pipeline.settings, source, batch, batch_id,
                                                run, report, pseudonym))
                retry_held_files(pipeline.spark, pipeline.lake, run, report, pseudonym, pipeline.settings)
                return report

            reports = [pipeline.recorded("ingest", run, ingest_work), *self._derived(run, found)]
            self.batches += 1
            log.info("%s", batch_line(batch_id, found, reports))
            # Here too, not only when the main loop finds the stream idle: files landing faster
            # than batches end leave it no idle moment, and a waiting maintenance run or the
            # bookkeeping tables' compaction would wait for a quiet spell that never comes.
            self._housekeeping()
        finally:
            self.turns.end()

    def _derived(self, run: RunContext, found: list[LandingFile]) -> list[StageReport]:
        """encode -> interests -> recommend; the recommend row gets the freshness of the batch's files."""
        pipeline = self.pipeline
        reports = [pipeline.run_stage(name, run) for name in DERIVED_STAGES[:-1]]
        recommend = pipeline.stage_work(DERIVED_STAGES[-1], run)

        def with_freshness() -> StageReport:
            report = recommend()
            report.counts.update(freshness_counts(found, datetime.now(timezone.utc)))
            return report

        reports.append(pipeline.recorded(DERIVED_STAGES[-1], run, with_freshness))
        return reports

    def _between_batches(self) -> None:
        """The main loop's work when no batch runs: settings and models, and other writers' turns."""
        if self._apply_changes():
            run = RunContext.create(f"{self.owner}__change__{datetime.now(timezone.utc).isoformat(timespec='seconds')}")
            reports = self._derived(run, [])
            log.info("stream: settings or models changed; %s", "; ".join(r.summary() for r in reports))
        self._housekeeping()

    def _housekeeping(self) -> None:
        """Compacts the bookkeeping tables when due; lets writers that asked for a turn write."""
        if self.batches - self._compacted_at >= self.compact_every:
            from interestlake.pipeline.maintain import compact

            self._compacted_at = self.batches
            reports = [compact(self.pipeline.lake, table) for table in BOOKKEEPING_TABLES]
            log.info("stream: compacted %s", "; ".join(f"{r.table}: {r.counts}" for r in reports))
        waiting = turn_requests(self.loaded.lake.root)
        if waiting:
            self._give_turn(waiting)

    def _apply_changes(self) -> bool:
        """Reloads the conf file and re-resolves the models, at most once per trigger interval.

        Returns:
            True when the settings the stages get changed (they then apply from the next stage on).
        """
        if time.monotonic() - self._last_check < self.loaded.stream.trigger_seconds:
            return False
        self._last_check = time.monotonic()
        current = self.pipeline.settings
        try:
            reloaded = self.reload() if self.reload is not None else self.loaded
        except ValueError as exc:  # SettingsError: keep running on the settings in use
            log.warning("stream: the conf file is invalid now; keeping the settings in use: %s", exc)
            return False
        fixed = [name for name in RESTART_SECTIONS if getattr(reloaded, name) != getattr(self.loaded, name)]
        if fixed:
            log.warning("stream: %s changed in the conf file; restart the stream to apply them", ", ".join(fixed))
            reloaded = reloaded.model_copy(update={name: getattr(self.loaded, name) for name in fixed})
        settings, versions = resolve_models(reloaded)
        if settings == current and versions == self.pipeline.model_versions:
            return False
        log.info("stream: applying new settings or models (versions %s)", versions or "none registered")
        self.pipeline = Pipeline(self.pipeline.spark, self.pipeline.lake, settings, versions)
        return True

    def _give_turn(self, waiting: list[str]) -> None:
        """Lets the writers waiting for the lake write, then takes the lock back."""
        log.info("stream: letting %s write the lake", ", ".join(waiting))
        self.lock.release()
        # Each waiter withdraws its request once it holds the lock (or gives up).
        while turn_requests(self.loaded.lake.root) and not self.stop_asked.is_set():
            time.sleep(0.2)
        while True:
            try:
                self.lock.acquire(0)
                break
            except LakeBusyError:
                if self.stop_asked.is_set():
                    # The query must not write without the lock: stop now, between batches.
                    self._stopped_during_turn = True
                    raise StreamStopped("stopped while another writer had the lake") from None
                time.sleep(0.5)
        log.info("stream: took the lake back")

    def _handle_signals(self) -> None:
        """SIGTERM and SIGINT ask for a stop after the current batch."""

        def ask(signum, _frame):
            log.info("stream: %s received; stopping after the current batch", signal.Signals(signum).name)
            self.stop_asked.set()

        for signum in _STOP_SIGNALS:
            signal.signal(signum, ask)


def freshness_counts(files: list[LandingFile], committed: datetime) -> dict[str, int]:
    """Milliseconds from each file's last write (its appearance under its final name) to ``committed``.

    ``freshness_max_ms`` is the batch's oldest file, ``freshness_min_ms`` its newest; none without files.
    """
    ages = [max(0, round((committed - f.mtime).total_seconds() * 1000)) for f in files if f.mtime is not None]
    return {"freshness_max_ms": max(ages), "freshness_min_ms": min(ages)} if ages else {}


def batch_line(batch_id: int, files: list[LandingFile], reports: list[StageReport]) -> str:
    """The one log line of a micro-batch: files, rows, users re-scored, seconds per stage, freshness."""
    by_stage = {r.stage: r for r in reports}
    ingest = by_stage["ingest"].counts
    rows = sum(v for k, v in ingest.items() if any(k.startswith(f"{kind}_accepted") or k.startswith(f"{kind}_rejected_")
                                                 for kind in C.LANDING_KINDS))
    rejected = sum(v for k, v in ingest.items() if "_rejected_" in k)
    recommend = by_stage["recommend"].counts
    seconds = " ".join(f"{r.stage} {r.counts.get('seconds', 0):.1f}s" for r in reports)
    freshness = (f"freshness {recommend['freshness_max_ms'] / 1000:.1f}s (newest file {recommend['freshness_min_ms'] / 1000:.1f}s)"
                 if "freshness_max_ms" in recommend else "freshness -")
    return (f"stream batch {batch_id}: {len(files)} file(s), {rows} row(s) ({rejected} quarantined), "
            f"{recommend.get('users_scored', 0)} user(s) re-scored; {seconds}; {freshness}")


def run_stream(
    settings: Settings, master: str | None = None, wait_seconds: float = 0.0, reload: Callable[[], Settings] | None = None
) -> int:
    """Runs ``interestlake stream`` until SIGTERM or SIGINT; returns the number of micro-batches processed."""
    return Stream(settings, master, wait_seconds, reload).run()


def _make_landing_folders(settings: Settings) -> None:
    """Creates the landing kinds' folders of a local lake (the file source watches all three)."""
    landing = settings.lake.landing_uri
    if "://" in landing and not landing.startswith("file://"):
        return
    for kind in C.LANDING_KINDS:
        Path(landing.removeprefix("file://"), kind).mkdir(parents=True, exist_ok=True)


__all__ = ["Stream", "StreamFailed", "StreamStopped", "batch_line", "freshness_counts", "run_stream"]
