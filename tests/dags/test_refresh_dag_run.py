"""Real runs of the DAGs through Airflow's own ``dag.test()``.

Each task spark-submits its job (local[2]) against a lake in a temporary
folder; the metadata DB is the SQLite DB of the session's temporary
AIRFLOW_HOME. The second refresh run injects a failure after a stage committed
and checks that Airflow's retry succeeds without writing anything twice; a
catalog run without a logical date (as an Asset-triggered run has) takes its
run_after as the logical date; bad settings fail a task without retries.
"""

from __future__ import annotations

import json
import shutil
import textwrap
from datetime import datetime, timedelta, timezone

import pytest

from interestlake import constants as C
from interestlake.datasets.sample import generate_sample

from tests.conftest import REPO

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
FIRST = datetime(2026, 11, 2, 0, 0, tzinfo=timezone.utc)
SECOND = FIRST + timedelta(minutes=5)
STAGES = ["ingest", "encode", "interests", "recommend"]
# The second run's new events: two users look at and buy items of the sample catalogue.
NEW_EVENTS = [
    {"event_id": "e-retry-1", "user_id": "u-0001", "item_id": "i-0002", "event_type": "view", "ts": "2026-11-02T00:01:00Z"},
    {"event_id": "e-retry-2", "user_id": "u-0001", "item_id": "i-0002", "event_type": "purchase", "ts": "2026-11-02T00:02:00Z"},
    {"event_id": "e-retry-3", "user_id": "u-0002", "item_id": "i-0003", "event_type": "click", "ts": "2026-11-02T00:03:00Z"},
]
# A job that runs the real stage and then, the first time only, exits 1: the worst
# moment to fail, since the stage's commits are already in the lake.
FAIL_ONCE_AFTER_COMMIT = textwrap.dedent(
    """\
    import pathlib
    import sys

    from interestlake.cli import main

    code = main([{stage!r}, *sys.argv[1:]])
    marker = pathlib.Path(__file__).with_name({stage!r} + ".failed-once")
    if code == 0 and not marker.exists():
        marker.touch()
        print("injected failure after a successful {stage}", file=sys.stderr)
        sys.exit(1)
    sys.exit(code)
    """
)


@pytest.fixture(scope="module")
def refresh_dag(dag_bag, tmp_path_factory):
    """The refresh DAG with quick retries, its lake under a temporary folder, the sample landed."""
    root = tmp_path_factory.mktemp("dag-run") / "lake"
    sample = generate_sample(f"{root}/landing", seed=7, n_users=6, n_items=8, days=20)
    variables = {
        "INTERESTLAKE_LAKE_ROOT": str(root),
        "INTERESTLAKE_JOB_ENV": json.dumps({"INTERESTLAKE__SPARK__CONF__spark.sql.shuffle.partitions": "2"}),
        "INTERESTLAKE_SPARK_CONF": json.dumps({"spark.ui.enabled": "false"}),
    }
    dag = dag_bag.get_dag("interestlake_refresh")
    with pytest.MonkeyPatch.context() as patch:
        for task in dag.tasks:
            # Retries as configured, but without the 30 s back-off; restored afterwards, since
            # the DAG bag is the session's (tests/dags/test_dag_structure.py checks the back-off).
            patch.setattr(task, "retry_delay", timedelta(seconds=1))
            patch.setattr(task, "retry_exponential_backoff", 0)
        for key, value in variables.items():
            patch.setenv(f"AIRFLOW_VAR_{key}", value)
        yield dag, root, sample


def _task_instances(run_id: str) -> dict[str, tuple[str, int]]:
    from airflow.models import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        return {ti.task_id: (ti.state, ti.try_number) for ti in session.query(TaskInstance).filter_by(run_id=run_id)}


def _lake(root):
    from deltalake import DeltaTable

    return lambda table: DeltaTable(f"{root}/{table}").to_pyarrow_table().to_pylist()


def _commits_of_run(root, table: str, run_id: str) -> int:
    from deltalake import DeltaTable

    return sum(
        json.loads(entry.get("userMetadata") or "{}").get("run_id") == run_id
        for entry in DeltaTable(f"{root}/{table}").history()
    )


@pytest.fixture(scope="module")
def first_run(refresh_dag):
    dag, root, sample = refresh_dag
    run = dag.test(logical_date=FIRST)
    return run, root, sample


def test_refresh_dag_run_writes_recommendations(first_run):
    run, root, sample = first_run
    assert run.state == "success"
    assert _task_instances(run.run_id) == {stage: ("success", 1) for stage in STAGES}
    read = _lake(root)
    assert len(read(C.EVENTS)) == sample.events
    recs = read(C.RECOMMENDATIONS)
    assert {r[C.COL_USER_ID] for r in recs} == {f"u-{i:04d}" for i in range(1, sample.users + 1)}
    assert {r[C.COL_RUN_ID] for r in recs} == {run.run_id}
    # The run id and logical date reached the jobs: pipeline_runs has one row per stage.
    runs = [r for r in read(C.PIPELINE_RUNS) if r[C.COL_RUN_ID] == run.run_id]
    assert sorted(r["stage"] for r in runs) == sorted(STAGES)
    assert {(r["status"], r["logical_date"]) for r in runs} == {("succeeded", FIRST)}


def test_a_failed_try_is_retried_without_duplicating_data(first_run, refresh_dag, tmp_path):
    dag, root, sample = refresh_dag
    jobs = tmp_path / "jobs"
    shutil.copytree(REPO / "jobs", jobs)
    for stage in ("ingest", "recommend"):
        (jobs / f"{stage}.py").write_text(FAIL_ONCE_AFTER_COMMIT.format(stage=stage))
    (root / "landing" / "events" / "events-retry.jsonl").write_text("".join(json.dumps(e) + "\n" for e in NEW_EVENTS))
    read = _lake(root)
    recommendations_before = {r[C.COL_USER_ID]: r for r in read(C.RECOMMENDATIONS)}

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIRFLOW_VAR_INTERESTLAKE_JOBS_DIR", str(jobs))
        run = dag.test(logical_date=SECOND)

    assert run.state == "success"
    assert (jobs / "ingest.failed-once").exists() and (jobs / "recommend.failed-once").exists()
    assert _task_instances(run.run_id) == {
        "ingest": ("success", 2), "encode": ("success", 1), "interests": ("success", 1), "recommend": ("success", 2),
    }
    # Each new event is in the table once, next to every event of the first run.
    events = [r[C.COL_EVENT_ID] for r in read(C.EVENTS)]
    assert len(events) == len(set(events)) == sample.events + len(NEW_EVENTS)
    assert _commits_of_run(root, C.EVENTS, run.run_id) == 1
    # The retried recommend committed nothing: one list per user, one commit by this run.
    assert _commits_of_run(root, C.RECOMMENDATIONS, run.run_id) == 1
    recs = read(C.RECOMMENDATIONS)
    keys = [(r[C.COL_USER_ID], r[C.COL_RANK]) for r in recs]
    assert len(keys) == len(set(keys))
    rescored = {r[C.COL_USER_ID] for r in recs if r[C.COL_RUN_ID] == run.run_id}
    assert rescored == {"u-0001", "u-0002"}
    assert set(recommendations_before) == {r[C.COL_USER_ID] for r in recs}
    # u-0001 bought i-0002 in the new batch: it is no longer recommended to them.
    assert "i-0002" not in {r[C.COL_ITEM_ID] for r in recs if r[C.COL_USER_ID] == "u-0001"}


def test_catalog_run_without_logical_date_ingests_what_landed(refresh_dag, dag_bag):
    """An Asset-triggered run has no logical date: the jobs get its run_after as theirs.

    encode, interests and recommend are the refresh DAG's jobs, run above; here they are marked done.
    """
    _, root, _ = refresh_dag
    landing = root / "landing"
    new_item = {"item_id": "i-new", "title": "Walnut practice pad", "category": "Drums", "price": 25.0,
                "updated_at": "2026-11-02T00:20:00Z"}
    (landing / "items" / "items-new.jsonl").write_text(json.dumps(new_item) + "\n")
    later_event = {"event_id": "e-later", "user_id": "u-0003", "item_id": "i-new", "event_type": "view",
                   "ts": "2026-11-02T00:21:00Z"}
    (landing / "events" / "events-later.jsonl").write_text(json.dumps(later_event) + "\n")
    run_after = SECOND + timedelta(minutes=20)

    run = dag_bag.get_dag("interestlake_catalog").test(
        run_after=run_after, logical_date=None, mark_success_pattern="encode|interests|recommend"
    )

    assert run.state == "success" and run.logical_date is None
    assert _task_instances(run.run_id)["ingest"] == ("success", 1)
    read = _lake(root)
    assert "i-new" in {r[C.COL_ITEM_ID] for r in read(C.ITEMS)}
    # One streaming source covers every landing folder: the event beside the catalog lands too.
    assert "e-later" in {r[C.COL_EVENT_ID] for r in read(C.EVENTS)}
    (ingest,) = [r for r in read(C.PIPELINE_RUNS) if r[C.COL_RUN_ID] == run.run_id]
    assert (ingest["stage"], ingest["status"], ingest["logical_date"]) == ("ingest", "succeeded", run_after)


def test_bad_settings_fail_at_once_without_retries(refresh_dag, tmp_path):
    """A job that rejects its settings (exit code 2) is not retried: retrying cannot help."""
    dag = refresh_dag[0]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIRFLOW_VAR_INTERESTLAKE_CONF", str(tmp_path / "missing.yaml"))
        run = dag.test(logical_date=SECOND + timedelta(minutes=30))
    assert run.state == "failed"
    states = _task_instances(run.run_id)
    assert states["ingest"] == ("failed", 1)
    assert {states[s][0] for s in STAGES[1:]} == {"upstream_failed"}


def test_refresh_run_skips_while_a_stream_runs_on_the_lake(refresh_dag, monkeypatch):
    """Continuous mode does the refresh's work: while `interestlake stream` runs, every task skips.

    Also while the stream has lent the writer lock to another job (here the lock is held by a
    catalog job, the stream's presence lock by the stream), the moment a refresh task may start.
    """
    from interestlake.lake.lock import StreamPresence, writer_lock

    dag, root, _ = refresh_dag
    # Were a task to run, its job would give up on the held writer lock soon (exit 3) rather than in 10 minutes.
    monkeypatch.setenv("AIRFLOW_VAR_INTERESTLAKE_LOCK_WAIT_SECONDS", "2")
    # The locks as a running stream and the job it lent the writer lock to hold them, taken in this process.
    stream = StreamPresence(str(root), "stream__2026-11-02T00:40:00+00:00")
    stream.acquire()
    try:
        with writer_lock(str(root), "catalog__2026-11-02T00:40:00+00:00"):
            run = dag.test(logical_date=SECOND + timedelta(minutes=40))
    finally:
        stream.release()
    assert {state for state, _ in _task_instances(run.run_id).values()} == {"skipped"}
    assert set(_task_instances(run.run_id)) == set(STAGES)
    # No job ran: the run wrote nothing (not even a pipeline_runs row).
    runs = _lake(root)(C.PIPELINE_RUNS) if (root / C.PIPELINE_RUNS).exists() else []
    assert [r for r in runs if r[C.COL_RUN_ID] == run.run_id] == []
