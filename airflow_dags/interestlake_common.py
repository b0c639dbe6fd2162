"""What the InterestLake DAGs share: where their settings come from and how a job is submitted.

The DAG files import this module by name from their own folder (Airflow puts the
DAG folder on ``sys.path``, and each DAG file makes sure); ``.airflowignore`` keeps
the DAG processor from parsing it as a DAG file of its own. Nothing here imports
pyspark, torch or interestlake: the jobs run in their own ``spark-submit`` processes.

Settings are read when a task runs, each from an Airflow Variable (which
Airflow also reads from ``AIRFLOW_VAR_<NAME>`` environment variables), else the
default below; the defaults run the jobs of this checkout on its embedded lake:

============================== =================================================================
Variable                       default
============================== =================================================================
interestlake_conf              ``$INTERESTLAKE_CONF``, else ``<project>/conf/local.yaml``
interestlake_lake_root         ``$INTERESTLAKE__LAKE__ROOT``; with the default conf
                               ``<project>/lakehouse`` (the lake of ``make demo``)
interestlake_jobs_dir          ``<project>/jobs``
interestlake_python            the Python of the Airflow worker (``PYSPARK_PYTHON``; "" leaves it unset)
interestlake_spark_conf        ``{}``: JSON of spark-submit ``--conf`` properties for every job
interestlake_encode_spark_conf ``{}``: JSON of extra properties for the encode job (GPUs)
interestlake_job_env           ``{}``: JSON of environment variables for the jobs
                               (e.g. ``INTERESTLAKE__RECOMMEND__K``)
interestlake_lock_wait_seconds ``600``: how long a job waits for another writer of the lake
============================== =================================================================

The Spark master, deploy mode and queue come from the Airflow connection
``spark_default`` (see docs/operations.md, "Deploying to an existing Airflow with a Spark cluster").
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import Asset, Connection, Variable, chain
from airflow.sdk.exceptions import AirflowFailException, AirflowNotFoundException, AirflowSkipException

log = logging.getLogger(__name__)
PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONF = PROJECT_ROOT / "conf" / "local.yaml"
SPARK_CONN_ID = "spark_default"
# Optional: its password is the key of privacy.pseudonymize_user_ids, handed to the jobs
# in the environment variable below (the conf's default privacy.key_env), never on a command line.
PSEUDONYM_CONN_ID = "interestlake_pseudonym_key"
PSEUDONYM_KEY_ENV = "INTERESTLAKE_PSEUDONYM_KEY"

# What downstream DAGs can schedule on: `schedule=Asset.ref(name="interestlake.recommendations")`.
RECOMMENDATIONS_ASSET = Asset(name="interestlake.recommendations", uri="x-interestlake://lake/recommendations")
# Updated by whoever delivers catalog files (an upstream DAG's outlet, the REST API
# or "Create Asset Event" in the UI): it starts interestlake_catalog.
CATALOG_LANDING_ASSET = Asset(name="interestlake.landing.items", uri="x-interestlake://landing/items")

# Retries back off from 30 s, doubling (plus Airflow's jitter); a job that found the
# lake busy (exit 3) or failed for a transient reason gets another try with the same
# logical date, which commits nothing twice.
DEFAULT_ARGS: dict[str, Any] = {
    "owner": "interestlake",
    "retries": 3,
    "retry_delay": timedelta(seconds=30),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": timedelta(minutes=10),
    # A hung job must not hold the lake (and, with max_active_runs=1, the schedule) forever.
    "execution_timeout": timedelta(hours=4),
}
# What every InterestLake DAG shares: one run at a time (the lake has one writer) and
# no catch-up (a late run takes in everything that arrived, so missed runs need no replay).
DAG_ARGS: dict[str, Any] = {
    "start_date": datetime(2026, 1, 1, tzinfo=timezone.utc),
    "catchup": False,
    "max_active_runs": 1,
    "default_args": DEFAULT_ARGS,
    "tags": ["interestlake"],
}
STAGES = ("ingest", "encode", "interests", "recommend")

# The interestlake command's exit code for bad settings or usage: retrying cannot help.
_EXIT_BAD_SETTINGS = 2
# Airflow 3 runs asset-triggered and some manual runs without a logical date; their
# run_after is fixed for the run and its retries all the same.
RUN_ARGS = (
    "--run-id", "{{ run_id }}",
    "--logical-date", "{{ (dag_run.logical_date or dag_run.run_after).isoformat() }}",
)


class InterestLakeJob(SparkSubmitOperator):
    """Submits one ``jobs/<job>.py`` with the run's id and logical date.

    Args:
        job: Name of the job file under the jobs folder (``ingest``, ``encode``, ...).
        job_args: Further arguments of the job, after ``--run-id`` / ``--logical-date``.
        **kwargs: Passed to ``SparkSubmitOperator`` (and ``BaseOperator``).
    """

    def __init__(
        self, *, job: str, job_args: Sequence[str] = (), skip_while_streaming: bool = False, **kwargs: Any
    ) -> None:
        kwargs.setdefault("task_id", job)
        kwargs.setdefault("conn_id", SPARK_CONN_ID)
        kwargs.setdefault("name", f"interestlake-{job}")
        super().__init__(application=str(PROJECT_ROOT / "jobs" / f"{job}.py"), application_args=[*RUN_ARGS, *job_args], **kwargs)
        self.job = job
        self.skip_while_streaming = skip_while_streaming

    def execute(self, context: Any) -> None:
        settings = job_settings(self.job)
        if self.skip_while_streaming:
            stream = stream_on_lake(settings)
            if stream:
                raise AirflowSkipException(
                    f"`interestlake stream` runs on the lake ({stream}): it ingests and scores continuously"
                )
        rendered = (self.application, self.application_args, self.conf, self.env_vars)
        self.application = settings["application"]
        self.application_args = [*self.application_args, "--conf", settings["conf"], "--wait", settings["wait"]]
        self.conf = {**settings["spark_conf"], **(self.conf or {})}
        self.env_vars = {**settings["env"], **(self.env_vars or {})}
        # The hook is built from this try's settings (a Variable may have changed since).
        self._hook = None
        try:
            super().execute(context)
        except Exception as exc:
            process = getattr(self._hook, "_submit_sp", None)
            if getattr(process, "returncode", None) == _EXIT_BAD_SETTINGS:
                raise AirflowFailException(
                    f"interestlake {self.job} rejected its settings or arguments (exit code 2; see the log above); "
                    "not retrying"
                ) from exc
            raise
        finally:
            self.application, self.application_args, self.conf, self.env_vars = rendered


def job_settings(job: str) -> dict[str, Any]:
    """Resolves a job's settings from Airflow Variables and the environment, at run time."""
    conf = _variable("interestlake_conf", os.environ.get("INTERESTLAKE_CONF") or str(DEFAULT_CONF))
    lake_root = _variable("interestlake_lake_root", os.environ.get("INTERESTLAKE__LAKE__ROOT"))
    if lake_root is None and Path(conf).resolve() == DEFAULT_CONF:
        lake_root = str(PROJECT_ROOT / "lakehouse")
    env = dict(_json_variable("interestlake_job_env"))
    if lake_root:
        env["INTERESTLAKE__LAKE__ROOT"] = lake_root
    key = _connection_password(PSEUDONYM_CONN_ID)
    if key:
        env[PSEUDONYM_KEY_ENV] = key
    python = _variable("interestlake_python", sys.executable)
    if python:
        env["PYSPARK_PYTHON"] = python
    spark_conf = dict(_json_variable("interestlake_spark_conf"))
    if job == "encode":
        spark_conf.update(_json_variable("interestlake_encode_spark_conf"))
    jobs_dir = Path(_variable("interestlake_jobs_dir", str(PROJECT_ROOT / "jobs")))
    return {
        "application": str(jobs_dir / f"{job}.py"),
        "conf": conf,
        "env": {k: str(v) for k, v in env.items()},
        "spark_conf": {k: str(v) for k, v in spark_conf.items()},
        "wait": str(_variable("interestlake_lock_wait_seconds", "600")),
    }


def stream_on_lake(settings: dict[str, Any]) -> dict | None:
    """The ``interestlake stream`` running on the jobs' lake now (its presence lock's record), else None.

    Also while the stream has lent the writer lock to a job that waited for it (the
    writer lock's holder is then that job, not the stream). Imports interestlake
    (installed where the jobs' drivers run: client mode) only when a task runs, never
    when the DAG file is parsed. Settings that do not load, or a lake on an object
    store (no lock to see), give None: the job then runs and reports for itself.
    """
    try:
        from interestlake.lake.lock import stream_running
        from interestlake.settings import load_settings

        root = load_settings(settings["conf"], env={**os.environ, **settings["env"]}).lake.root
        return stream_running(root)
    except Exception as exc:  # the job itself reports settings problems, with exit code 2
        log.warning("could not check whether a stream runs on the lake (%s); running the job", exc)
        return None


def _variable(key: str, default: str | None) -> str | None:
    return Variable.get(key, default=default)


def _connection_password(conn_id: str) -> str | None:
    """The password of an Airflow connection, None when it is not defined (Airflow masks it in logs)."""
    try:
        return Connection.get(conn_id).password or None
    except AirflowNotFoundException:
        return None


def _json_variable(key: str) -> dict[str, Any]:
    value = Variable.get(key, default="{}")
    try:
        parsed = json.loads(value) if isinstance(value, str) else value
    except ValueError:
        raise AirflowFailException(f"Airflow Variable {key} must be a JSON object, got {value!r}") from None
    if not isinstance(parsed, dict):
        raise AirflowFailException(f"Airflow Variable {key} must be a JSON object, got {value!r}")
    return parsed


def pipeline_tasks(skip_while_streaming: bool = False) -> list[InterestLakeJob]:
    """The four stages as chained tasks, in order; the last one updates the recommendations Asset.

    Args:
        skip_while_streaming: Each task is skipped (and so are the ones after it) while an
            ``interestlake stream`` holds the lake: the stream does their work already.
    """
    tasks = [
        InterestLakeJob(job=stage, outlets=[RECOMMENDATIONS_ASSET] if stage == STAGES[-1] else [],
                        skip_while_streaming=skip_while_streaming)
        for stage in STAGES
    ]
    chain(*tasks)
    return tasks
