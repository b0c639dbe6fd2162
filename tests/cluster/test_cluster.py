"""The jobs on a real Spark cluster: a standalone master and two one-core workers on loopback.

``interestlake refresh --master spark://...`` runs in its own process (its own driver,
executors in their own JVMs and Python workers) and must produce the tables a
local-mode run produces from the same landing files. The Spark event log shows
that the executors, not the driver, ran the encoder. The Airflow refresh DAG, with
``spark_default`` pointed at the master, runs there unchanged. Stopping the cluster
leaves no process behind. ``interestlake maintain`` runs there too.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from interestlake import constants as C
from interestlake.datasets.sample import generate_sample
from interestlake.pipeline.run import RunContext

from tests.cluster.standalone import StandaloneCluster
from tests.conftest import REPO, TEST_JVM_OPTIONS, make_settings

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.e2e]
LOGICAL_DATE = datetime(2026, 11, 2, 0, 0, tzinfo=timezone.utc)
RUN_ID = "cluster-1"
STANDALONE_CONF = REPO / "conf" / "standalone.yaml"
TOLERANCE = 1e-5
# Vector and float columns compared within TOLERANCE; the rest must be equal.
VECTORS = ("long_term", "short_term", "interest", "decayed_sum")
FLOATS = ("decayed_mass", C.COL_SCORE)
# When the row was written (wall clock), not what it holds.
WRITTEN_AT = (C.COL_UPDATED_AT,)
# The executors' JVMs get the test run's JVM options too (the drivers get them from conftest).
EXECUTOR_JVM = {"spark.executor.extraJavaOptions": TEST_JVM_OPTIONS}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A master and two workers of one core and 1 GiB each; stopped by the last test (or here)."""
    started = StandaloneCluster(tmp_path_factory.mktemp("standalone"), workers=2, cores=1, memory="1g").start()
    yield started
    started.stop()


@pytest.fixture(scope="module")
def landing(tmp_path_factory):
    """One set of generated landing files, copied into every lake of this module."""
    folder = tmp_path_factory.mktemp("cluster-landing")
    generate_sample(str(folder), seed=11, n_users=10, n_items=12, days=20)
    return folder


def new_lake(parent: Path, landing: Path) -> Path:
    root = parent / "lake"
    # copy2 keeps modification times, which items without updated_at take.
    shutil.copytree(landing, root / "landing")
    return root


@pytest.fixture(scope="module")
def cluster_run(cluster, landing, tmp_path_factory):
    """`interestlake refresh` against the cluster, with Spark's event log on."""
    work = tmp_path_factory.mktemp("cluster-run")
    root, events = new_lake(work, landing), work / "events"
    events.mkdir()
    env = {
        "INTERESTLAKE__SPARK__CONF__spark.eventLog.enabled": "true",
        "INTERESTLAKE__SPARK__CONF__spark.eventLog.dir": events.as_uri(),
        # One file of plain JSON lines (Spark 4 rolls and compresses event logs by default).
        "INTERESTLAKE__SPARK__CONF__spark.eventLog.compress": "false",
        "INTERESTLAKE__SPARK__CONF__spark.eventLog.rolling.enabled": "false",
    }
    reports = run_cli(cluster, root, ["refresh", "--run-id", RUN_ID, "--logical-date", LOGICAL_DATE.isoformat()], env)
    logs = list(events.iterdir())
    assert len(logs) == 1 and logs[0].is_file(), logs
    print("cluster refresh stage seconds:", {r["stage"]: r["counts"]["seconds"] for r in reports})
    return {"root": root, "reports": {r["stage"]: r for r in reports}, "events": read_event_log(logs[0])}


def run_cli(cluster: StandaloneCluster, root: Path, args: list[str], env: dict[str, str] | None = None) -> list[dict]:
    """Runs an `interestlake` command against the cluster in its own process; returns its JSON reports."""
    command = [sys.executable, "-m", "interestlake.cli", *args, "--conf", str(STANDALONE_CONF),
               "--master", cluster.master_url, "--json"]
    env = {**os.environ, "INTERESTLAKE__LAKE__ROOT": str(root),
           **{f"INTERESTLAKE__SPARK__CONF__{key}": value for key, value in EXECUTOR_JVM.items()}, **(env or {})}
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, timeout=900)
    assert done.returncode == 0, f"{done.stderr[-4000:]}\n{cluster.logs()}"
    return [json.loads(line) for line in done.stdout.splitlines()]


@pytest.fixture(scope="module")
def local_run(spark, landing, tmp_path_factory):
    """The same refresh in local mode, in the test session's shared local[2] session."""
    from interestlake.lake.tables import open_lake
    from interestlake.pipeline.refresh import Pipeline

    root = new_lake(tmp_path_factory.mktemp("local-run"), landing)
    settings = make_settings(root)
    lake = open_lake(spark, settings.lake)
    lake.ensure_tables()
    reports = Pipeline(spark, lake, settings).refresh(RunContext.create(RUN_ID, LOGICAL_DATE.isoformat()))
    return {"root": root, "reports": {r.stage: r for r in reports}}


def test_refresh_on_the_cluster_equals_local_mode(cluster_run, local_run):
    # Wall time and model loads (one per Python worker) depend on the machine, not the data.
    per_machine = {"seconds", "encoder_loads"}
    for stage in ("ingest", "encode", "interests", "recommend"):
        cluster_counts = {k: v for k, v in cluster_run["reports"][stage]["counts"].items() if k not in per_machine}
        local_counts = {k: v for k, v in local_run["reports"][stage].counts.items() if k not in per_machine}
        assert cluster_counts == local_counts, stage
    assert_same_tables(cluster_run["root"], local_run["root"])
    recommendations = read_table(cluster_run["root"], C.RECOMMENDATIONS)
    assert {r[C.COL_USER_ID] for r in recommendations} == {f"u-{i:04d}" for i in range(1, 11)}


def test_the_executors_ran_the_encoder(cluster_run):
    events, encode = cluster_run["events"], cluster_run["reports"]["encode"]
    # Two executors in JVMs of their own (the driver's is "driver"), one core each.
    assert sorted(events["executors"]) == ["0", "1"]
    assert set(events["executors"].values()) == {1}
    # Every task of the application ran on them; both took part.
    assert {task["executor"] for task in events["tasks"]} == {"0", "1"}
    # The encoder is the Python UDF `predict` (predict_batch_udf) of an ArrowEvalPython
    # node; its "number of output rows" metric counts the vectors it returned.
    encoder_tasks = [t for t in events["tasks"] if t["encoder_rows"]]
    assert encoder_tasks, "no task ran the encoder UDF"
    assert {t["executor"] for t in encoder_tasks} <= {"0", "1"}
    assert sum(t["encoder_rows"] for t in encoder_tasks) == encode["counts"]["texts_to_encode"] > 0
    # The accumulator of the encoder's model loads, added to on the executors: the model
    # loaded once per Python worker (at most one per core), not once per task or batch.
    assert 1 <= encode["counts"]["encoder_loads"] <= 2


def test_maintenance_on_the_cluster_keeps_the_tables(cluster, cluster_run, local_run):
    reports = run_cli(cluster, cluster_run["root"], ["maintain", "--logical-date", LOGICAL_DATE.isoformat()])
    assert list(dict.fromkeys(r["step"] for r in reports)) == ["retention", "compact", "vacuum", "checkpoint"]
    assert_same_tables(cluster_run["root"], local_run["root"])


def test_refresh_dag_runs_unchanged_on_the_cluster(cluster, landing, local_run, dag_bag, tmp_path, monkeypatch):
    """The Airflow refresh DAG with spark_default = the standalone master (client mode)."""
    root = new_lake(tmp_path, landing)
    apps_before = {app["id"] for app in cluster.state()["completedapps"]}
    monkeypatch.setenv("AIRFLOW_CONN_SPARK_DEFAULT", json.dumps(
        {"conn_type": "spark", "host": "spark://127.0.0.1", "port": cluster.port, "extra": {"deploy-mode": "client"}}
    ))
    monkeypatch.setenv("AIRFLOW_VAR_INTERESTLAKE_CONF", str(STANDALONE_CONF))
    monkeypatch.setenv("AIRFLOW_VAR_INTERESTLAKE_LAKE_ROOT", str(root))
    monkeypatch.setenv("AIRFLOW_VAR_INTERESTLAKE_SPARK_CONF", json.dumps(EXECUTOR_JVM))
    # One one-core executor per application: the four applications are what this test is about
    # (that the refresh above spreads over both executors is checked by the tests above), and
    # each second executor was one more JVM and Python workers to start, four times.
    monkeypatch.setenv("AIRFLOW_VAR_INTERESTLAKE_JOB_ENV", json.dumps({"INTERESTLAKE__SPARK__CONF__spark.cores.max": "1"}))

    run = dag_bag.get_dag("interestlake_refresh").test(logical_date=LOGICAL_DATE)

    assert run.state == "success"
    # Each of the four tasks spark-submitted one application to the master.
    finished = [app for app in cluster.state()["completedapps"] if app["id"] not in apps_before]
    assert len(finished) == 4 and {app["state"] for app in finished} == {"FINISHED"}
    assert_same_tables(root, local_run["root"], run_id=run.run_id)


def test_stopping_the_cluster_leaves_no_spark_process(cluster):
    assert cluster.leftovers(), "the cluster's processes should be running before it stops"
    assert cluster.stop() == []
    assert all(process.poll() is not None for process in cluster.processes.values())


# -- helpers ------------------------------------------------------------------------


def read_table(root: Path, table: str) -> list[dict]:
    from deltalake import DeltaTable

    return DeltaTable(str(root / table)).to_pyarrow_table().to_pylist()


def assert_same_tables(actual_root: Path, expected_root: Path, run_id: str = RUN_ID) -> None:
    """``recommendations`` and ``user_interests`` equal, floats within TOLERANCE.

    ``run_id`` is the id the actual run wrote (the expected run wrote RUN_ID).
    """
    for table in (C.RECOMMENDATIONS, C.USER_INTERESTS):
        keys = {C.RECOMMENDATIONS: (C.COL_USER_ID, C.COL_RANK), C.USER_INTERESTS: (C.COL_USER_ID, C.COL_ENCODER_VERSION)}[table]
        actual = {tuple(r[k] for k in keys): r for r in read_table(actual_root, table)}
        expected = {tuple(r[k] for k in keys): r for r in read_table(expected_root, table)}
        assert actual.keys() == expected.keys(), table
        for key, row in actual.items():
            want = expected[key]
            assert row[C.COL_RUN_ID] == run_id and want[C.COL_RUN_ID] == RUN_ID
            for column, value in row.items():
                if column == C.COL_RUN_ID or column in WRITTEN_AT:
                    continue
                if column in VECTORS:
                    assert len(value) == len(want[column]), (table, key, column)
                    assert max(abs(a - b) for a, b in zip(value, want[column])) <= TOLERANCE, (table, key, column)
                elif column in FLOATS:
                    assert math.isclose(value, want[column], abs_tol=TOLERANCE), (table, key, column)
                else:
                    assert value == want[column], (table, key, column)


def read_event_log(path: Path) -> dict:
    """Executors, and per task its executor and the rows the encoder UDF returned in it.

    The encoder's rows are the "number of output rows" metric of ArrowEvalPython nodes
    that evaluate ``predict`` (predict_batch_udf), read from the plans of the SQL
    executions (adaptive re-plans included) and summed from the tasks' metric updates.
    """
    executors: dict[str, int] = {}
    encoder_metrics: set[int] = set()
    tasks = []
    lines = path.read_text().splitlines()
    for event in map(json.loads, lines):
        kind = event["Event"]
        if kind == "SparkListenerExecutorAdded":
            executors[event["Executor ID"]] = event["Executor Info"]["Total Cores"]
        elif kind.endswith(("SparkListenerSQLExecutionStart", "SparkListenerSQLAdaptiveExecutionUpdate")):
            encoder_metrics |= _encoder_row_metrics(event["sparkPlanInfo"])
    for event in map(json.loads, lines):
        if event["Event"] == "SparkListenerTaskEnd":
            info = event["Task Info"]
            rows = sum(int(a.get("Update", 0)) for a in info.get("Accumulables", []) if a["ID"] in encoder_metrics)
            tasks.append({"executor": info["Executor ID"], "encoder_rows": rows})
    return {"executors": executors, "tasks": tasks}


def _encoder_row_metrics(plan: dict) -> set[int]:
    found = set()
    if plan["nodeName"].startswith("ArrowEvalPython") and "predict(" in plan["simpleString"]:
        found |= {m["accumulatorId"] for m in plan["metrics"] if m["name"] == "number of output rows"}
    for child in plan.get("children", []):
        found |= _encoder_row_metrics(child)
    return found
