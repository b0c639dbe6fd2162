"""A lake on a small disk that fills up, or turns read-only, in the middle of a run.

The lake lives on a size-limited tmpfs mounted by the test (root and mount permission
needed; the test is skipped with the reason where mounting is not permitted). Each stage
meets a full disk while writing; then the lake turns read-only under a refresh. Every
failing command exits 1 with one line naming the cause, leaves every table readable with
no half-written version and no stray data files, and once space returns the next runs
converge to the tables of an uninterrupted refresh over the same landing files. The
refresh DAG's ingest task, run by Airflow's ``dag.test()``, fails on the full disk with
that line in its log, is retried by Airflow and succeeds once space is back.
"""

import json
import os
import shutil
import subprocess
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from interestlake import constants as C

from tests.conftest import REPO
from tests.fixtures.old_lakes.build import landing_rows, write_landing
from tests.spark.test_upgrade import COMPARED, assert_same, pipeline_over, run, snapshot

pytestmark = [pytest.mark.faults, pytest.mark.spark, pytest.mark.slow]

CONF = str(REPO / "conf" / "local.yaml")
# Left free when the disk is "full": the writer lock and Spark's checkpoint marks still fit,
# the stage's data files do not.
MARGIN_BYTES = 8 * 4096


@pytest.fixture
def small_disk(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(disk)],
                                 capture_output=True, text=True)
    except FileNotFoundError:
        pytest.skip("no `mount` command here: a size-limited tmpfs cannot be made")
    if mounted.returncode != 0:
        pytest.skip(f"mounting a size-limited tmpfs is not permitted here (needs root): {mounted.stderr.strip()}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


@contextmanager
def full(disk: Path):
    """Fills the disk but for MARGIN_BYTES while the block runs; the block may free it sooner (``free()``)."""
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    filler = disk / "filler"
    with open(filler, "wb") as handle:
        os.posix_fallocate(handle.fileno(), 0, max(0, free - MARGIN_BYTES))
    try:
        yield lambda: filler.unlink(missing_ok=True)
    finally:
        filler.unlink(missing_ok=True)


@contextmanager
def read_only(disk: Path):
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
    try:
        yield
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(disk)], check=True)


def command(args, capsys):
    """Runs the CLI in this process (it reuses the test's Spark session): exit code and stderr lines."""
    from interestlake.cli import main

    capsys.readouterr()
    code = main([*args, "--conf", CONF, "-q"])
    return code, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def assert_no_partial_state(lake):
    """Every table loads and reads, and every Parquet file a folder reader would see is in the Delta log."""
    from deltalake import DeltaTable

    for table in (C.EVENTS, C.REVIEWS, C.ITEMS, C.QUARANTINE, C.TEXT_EMBEDDINGS, C.ITEM_EMBEDDINGS,
                  C.USER_INTERESTS, C.RECOMMENDATIONS, C.USER_TOPICS, C.LANDING_FILES):
        delta = DeltaTable(lake.uri(table))
        listed = {Path(uri.removeprefix("file://")) for uri in delta.file_uris()}
        assert all(path.exists() for path in listed), table
        root = Path(lake.uri(table))
        visible = {p for p in root.rglob("*.parquet")
                   if not any(part.startswith((".", "_")) for part in p.relative_to(root).parts)}
        assert visible <= listed, (table, sorted(str(p) for p in visible - listed))
        lake.read(table).count()


def test_full_disk_in_each_stage_and_a_read_only_lake_fail_cleanly_and_converge(spark, small_disk, tmp_path,
                                                                                monkeypatch, capsys):
    landing = tmp_path / "landing"
    write_landing(landing)
    monkeypatch.setenv("INTERESTLAKE__LAKE__ROOT", str(small_disk / "lake"))
    monkeypatch.setenv("INTERESTLAKE__LAKE__LANDING", str(landing))
    monkeypatch.setenv("INTERESTLAKE__SPARK__MASTER", "local[2]")
    stamp = ["--logical-date", "2026-11-20T00:00:00Z"]
    # A new lake's first command: delta-rs refuses to create its tables with an error of several
    # lines, in colour, which the command prints as one.
    with full(small_disk):
        code, err = command(["ingest", "--run-id", "full-new-lake", *stamp], capsys)
    assert code == 1 and len(err) == 1 and "No space left on device" in err[0], err
    # Some tables were created, some not: such a lake counts as an earlier layout (see the README).
    shutil.rmtree(small_disk / "lake")
    lake = pipeline_over(spark, small_disk / "lake").lake
    lake.ensure_tables()

    for stage in ("ingest", "encode", "interests", "recommend"):
        with full(small_disk):
            code, err = command([stage, "--run-id", f"full-{stage}", *stamp], capsys)
        assert code == 1 and len(err) == 1, (stage, err)
        assert err[0].startswith(f"interestlake {stage}: the lake at ") and "No space left on device" in err[0], err
        assert_no_partial_state(lake)
        # Space is back: the same command, retried, succeeds.
        assert command([stage, "--run-id", f"retry-{stage}", *stamp], capsys)[0] == 0, stage

    # New landing rows arrive; the lake turns read-only under the refresh.
    (landing / "events" / "more.jsonl").write_text("".join(json.dumps(row) + "\n" for row in more_events()))
    with read_only(small_disk):
        code, err = command(["refresh", "--run-id", "read-only"], capsys)
    assert code == 1 and len(err) == 1 and "Read-only file system" in err[0], err
    assert_no_partial_state(lake)
    assert command(["refresh", "--run-id", "after"], capsys)[0] == 0

    # The same tables as the same two refreshes, uninterrupted, over the same landing files.
    reference_root = tmp_path / "reference"
    write_landing(reference_root / "landing")
    reference = pipeline_over(spark, reference_root)
    reference.lake.ensure_tables()
    reference.refresh(run("reference-1"))
    (reference_root / "landing" / "events" / "more.jsonl").write_text((landing / "events" / "more.jsonl").read_text())
    # A later logical date: the same one would be a retry of the first refresh, committing nothing.
    reference.refresh(run("reference-2", "2026-11-21T00:00:00Z"))
    for table in COMPARED:
        assert_same(snapshot(lake, table), snapshot(reference.lake, table), table)


def more_events():
    events = landing_rows()["events"]
    return [{**events[0], "event_id": "later-1", "item_id": "i4", "ts": "2026-10-20T12:00:00Z"},
            {**events[0], "event_id": "later-2", "event_type": "search", "item_id": None,
             "text": "coffee grinder", "ts": "2026-10-20T13:00:00Z"}]


def test_the_airflow_ingest_task_fails_on_a_full_disk_is_retried_and_succeeds(spark, dag_bag, small_disk, tmp_path,
                                                                            monkeypatch, capfd):
    """The refresh DAG's real ingest task (spark-submit of jobs/ingest.py) through ``dag.test()``.

    Its first try meets the full disk and fails; the task's ``on_retry_callback`` (what an
    operator's alert and clean-up would be) checks the lake and frees the space; the retry
    succeeds. Only ingest runs (the later tasks are marked done: each spark-submit costs
    seconds); its tables then equal an uninterrupted ingest of the same landing files.
    """
    landing = tmp_path / "landing"
    write_landing(landing)
    root = small_disk / "lake"
    lake = pipeline_over(spark, root).lake
    lake.ensure_tables()
    variables = {
        "INTERESTLAKE_LAKE_ROOT": str(root),
        "INTERESTLAKE_JOB_ENV": json.dumps({"INTERESTLAKE__LAKE__LANDING": str(landing),
                                            "INTERESTLAKE__SPARK__CONF__spark.sql.shuffle.partitions": "2"}),
        "INTERESTLAKE_SPARK_CONF": json.dumps({"spark.ui.enabled": "false"}),
    }
    for key, value in variables.items():
        monkeypatch.setenv(f"AIRFLOW_VAR_{key}", value)
    dag = dag_bag.get_dag("interestlake_refresh")
    task = dag.get_task("ingest")
    # The DAG's retries, without the 30 s back-off.
    monkeypatch.setattr(task, "retry_delay", timedelta(seconds=1))
    monkeypatch.setattr(task, "retry_exponential_backoff", 0)
    seen_between_tries = []

    with full(small_disk) as free:
        def space_returns(context):
            try:
                assert_no_partial_state(lake)
                seen_between_tries.append((context["ti"].try_number, "clean"))
            except BaseException as exc:  # Airflow logs and drops a callback's exception
                seen_between_tries.append((context["ti"].try_number, exc))
            free()

        monkeypatch.setattr(task, "on_retry_callback", [space_returns])
        capfd.readouterr()
        dag_run = dag.test(logical_date=datetime(2026, 11, 3, tzinfo=timezone.utc),
                           mark_success_pattern="encode|interests|recommend")
        log = capfd.readouterr()

    assert dag_run.state == "success"
    assert seen_between_tries == [(1, "clean")]
    from airflow.models import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        ingest = session.query(TaskInstance).filter_by(run_id=dag_run.run_id, task_id="ingest").one()
        assert (ingest.state, ingest.try_number) == ("success", 2)
    # The job's one line naming the cause reached the task log (spark-submit's output).
    causes = [line for line in (log.out + log.err).splitlines() if "No space left on device" in line]
    assert len(causes) == 1 and f"interestlake ingest: the lake at {root} cannot be used" in causes[0], causes
    [recorded] = lake.read_rows(C.PIPELINE_RUNS, filters=[(C.COL_RUN_ID, "=", dag_run.run_id)])
    assert (recorded["stage"], recorded["status"]) == ("ingest", "succeeded")

    reference = pipeline_over(spark, tmp_path / "reference")
    write_landing(tmp_path / "reference" / "landing")
    reference.lake.ensure_tables()
    reference.run_stage("ingest", run("reference"))
    for table in (C.EVENTS, C.REVIEWS, C.ITEMS):
        assert_same(snapshot(lake, table), snapshot(reference.lake, table), table)
    for table in (C.QUARANTINE, C.LANDING_FILES):
        assert lake.read(table).count() == reference.lake.read(table).count(), table
