"""The DAG folder imports cleanly and each DAG has the tasks, schedule and retries users rely on."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta

import pytest

from interestlake import constants as C

from tests.conftest import DAG_FOLDER

STAGES = ["ingest", "encode", "interests", "recommend"]
RUN_ARGS = ["--run-id", "{{ run_id }}", "--logical-date", "{{ (dag_run.logical_date or dag_run.run_after).isoformat() }}"]


def test_dag_folder_has_no_import_errors(dag_bag):
    assert dag_bag.import_errors == {}
    assert set(dag_bag.dag_ids) == {"interestlake_refresh", "interestlake_catalog", "interestlake_maintenance"}


def test_airflow_cli_lists_no_import_errors(airflow_home):
    out = subprocess.run(
        [sys.executable, "-m", "airflow", "dags", "list-import-errors", "--local", "-o", "json"],
        check=True, capture_output=True, text=True, timeout=300,
    ).stdout
    assert json.loads(out.strip().splitlines()[-1]) == []


def test_dag_files_import_no_spark_torch_or_interestlake():
    """The scheduler parses DAG files often: the heavy libraries stay in the jobs."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import runpy\n"
        "for name in ('interestlake_refresh', 'interestlake_catalog', 'interestlake_maintenance'):\n"
        "    runpy.run_path(f'{sys.argv[1]}/{name}.py')\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'pyspark', 'torch', 'transformers', 'interestlake', 'deltalake'}))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(DAG_FOLDER)], check=True, capture_output=True, text=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def _chain(dag) -> list[str]:
    """Task ids in dependency order, checking that the DAG is one straight chain."""
    roots = [t for t in dag.tasks if not t.upstream_task_ids]
    assert len(roots) == 1, [t.task_id for t in roots]
    order, task = [], roots[0]
    while True:
        order.append(task.task_id)
        downstream = sorted(task.downstream_task_ids)
        if not downstream:
            return order
        assert len(downstream) == 1, (task.task_id, downstream)
        task = dag.get_task(downstream[0])


def _assert_jobs(dag, jobs: dict[str, tuple[str, list[str]]]):
    from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

    for task in dag.tasks:
        job, extra_args = jobs[task.task_id]
        assert isinstance(task, SparkSubmitOperator)
        assert task._conn_id == "spark_default"
        assert task.application == str(DAG_FOLDER.parent / "jobs" / f"{job}.py")
        assert (DAG_FOLDER.parent / "jobs" / f"{job}.py").is_file()
        assert task.application_args == RUN_ARGS + extra_args
        assert task.retries == 3
        assert task.retry_delay == timedelta(seconds=30)
        assert task.retry_exponential_backoff == 2.0
        assert task.max_retry_delay == timedelta(minutes=10)


def _schedule(dag) -> tuple[str, str]:
    return dag.timetable.expression, str(dag.timetable.timezone)


def test_refresh_every_five_minutes_one_stage_per_task(dag_bag):
    dag = dag_bag.get_dag("interestlake_refresh")
    assert _schedule(dag) == ("*/5 * * * *", "UTC")
    assert dag.max_active_runs == 1
    assert dag.catchup is False
    assert _chain(dag) == STAGES
    _assert_jobs(dag, {stage: (stage, []) for stage in STAGES})
    outlets = {t.task_id: [a.name for a in t.outlets] for t in dag.tasks}
    assert outlets == {"ingest": [], "encode": [], "interests": [], "recommend": ["interestlake.recommendations"]}


def test_catalog_runs_on_the_catalog_asset_through_the_four_stages(dag_bag):
    dag = dag_bag.get_dag("interestlake_catalog")
    assert [a.name for a in dag.timetable.asset_condition.objects] == ["interestlake.landing.items"]
    assert dag.max_active_runs == 1
    assert _chain(dag) == STAGES
    _assert_jobs(dag, {s: (s, []) for s in STAGES})
    assert [a.name for a in dag.get_task("recommend").outlets] == ["interestlake.recommendations"]


def test_maintenance_daily_in_the_order_of_the_maintain_command_then_the_model(dag_bag):
    dag = dag_bag.get_dag("interestlake_maintenance")
    assert _schedule(dag) == ("30 2 * * *", "UTC")
    assert dag.max_active_runs == 1
    assert dag.catchup is False
    assert _chain(dag) == [*C.MAINTENANCE_STEPS, "train_interest_model", "promote_interest_model"]
    _assert_jobs(dag, {
        **{step: ("maintain", ["--steps", step]) for step in C.MAINTENANCE_STEPS},
        "train_interest_model": ("train", []), "promote_interest_model": ("promote", []),
    })


@pytest.mark.parametrize("job", ["ingest", "encode", "maintain"])
def test_job_settings_default_to_the_embedded_lake(dag_bag, job, monkeypatch):
    """Without Variables, the jobs of this checkout run on its ./lakehouse; Variables override."""
    import interestlake_common as common

    for name in ("INTERESTLAKE_CONF", "INTERESTLAKE__LAKE__ROOT"):
        monkeypatch.delenv(name, raising=False)
    defaults = common.job_settings(job)
    assert defaults["application"] == str(DAG_FOLDER.parent / "jobs" / f"{job}.py")
    assert defaults["conf"] == str(DAG_FOLDER.parent / "conf" / "local.yaml")
    assert defaults["env"] == {"INTERESTLAKE__LAKE__ROOT": str(DAG_FOLDER.parent / "lakehouse"), "PYSPARK_PYTHON": sys.executable}
    assert defaults["spark_conf"] == {}

    monkeypatch.setenv("AIRFLOW_VAR_INTERESTLAKE_CONF", "/etc/interestlake/cluster.yaml")
    monkeypatch.setenv("AIRFLOW_VAR_INTERESTLAKE_SPARK_CONF", '{"spark.executor.instances": 4}')
    monkeypatch.setenv("AIRFLOW_VAR_INTERESTLAKE_ENCODE_SPARK_CONF", '{"spark.executor.resource.gpu.amount": "1"}')
    monkeypatch.setenv("AIRFLOW_VAR_INTERESTLAKE_PYTHON", "")
    custom = common.job_settings(job)
    assert custom["conf"] == "/etc/interestlake/cluster.yaml"
    # A conf of one's own names its lake: no default root is forced on it.
    assert custom["env"] == {}
    expected = {"spark.executor.instances": "4"}
    if job == "encode":
        expected["spark.executor.resource.gpu.amount"] = "1"
    assert custom["spark_conf"] == expected


def test_pseudonymisation_key_comes_from_an_airflow_connection(dag_bag, monkeypatch):
    """The key reaches the jobs only in their environment, from the connection's password."""
    import interestlake_common as common

    assert common.PSEUDONYM_KEY_ENV not in common.job_settings("ingest")["env"]
    monkeypatch.setenv(
        "AIRFLOW_CONN_INTERESTLAKE_PSEUDONYM_KEY", '{"conn_type": "generic", "password": "s3cret-key-of-some-length"}'
    )
    settings = common.job_settings("ingest")
    assert settings["env"][common.PSEUDONYM_KEY_ENV] == "s3cret-key-of-some-length"
    assert "s3cret" not in settings["application"] + settings["conf"] + json.dumps(settings["spark_conf"])
