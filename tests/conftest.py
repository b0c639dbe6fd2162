"""Shared fixtures: one local Spark session for the whole run, a fresh lake per test, and Airflow.

Airflow reads its configuration when it is first imported, so the environment is
set by the ``airflow_home`` session fixture and every test imports Airflow only after it.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

# OpenMP threads that sleep instead of spinning while they wait, as the CLI sets for every
# command: next to the run's own JVMs and Spark workers, spinning made each torch step of the
# in-process trainings up to 50x slower (docs/evaluation.md; seven of the peers' tests took 261 s
# spinning and 46 s without, on the same loaded machine). Set before any test imports torch or
# numpy; subprocesses (jobs, Spark workers) inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Every JVM the tests start compiles with the client JIT only (C1). The tests' Spark jobs run
# seconds on tiny data in fresh JVMs (each CLI process, spark-submit from Airflow, the cluster's
# daemons and executors), where the server JIT (C2) compiling Spark's code burned most of the CPU:
# one refresh of a 20-user sample, 70 s wall and 89 CPU-seconds in the JVM by default, took
# 54 s and 42 CPU-seconds with C1 only (docs/testing.md). Only for the tests, and not for the
# run's shared session (the `spark` fixture), which lives for the whole run: a long job wants
# C2's code. SPARK_SUBMIT_OPTS reaches every driver JVM (pyspark starts its gateway with
# spark-submit, as Airflow's operator does); tests/cluster/standalone.py passes the options on
# to the cluster's daemons and executors.
TEST_JVM_OPTIONS = "-XX:TieredStopAtLevel=1"
os.environ.setdefault("SPARK_SUBMIT_OPTS", TEST_JVM_OPTIONS)
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test TEST_WORKERS=N` runs N workers: one BLAS/OpenMP thread each (torch and numpy
    # would start one per core in each).
    os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
DAG_FOLDER = REPO / "airflow_dags"


# Files whose tests take minutes, longest first: collected first, so that a broken slow path
# shows early and, with `make test TEST_WORKERS=N` (pytest-xdist, whole files per worker),
# the workers start on them at once and finish together.
SLOW_FIRST = (
    "tests/faults/test_kill_and_concurrency.py",
    "tests/cluster/test_cluster.py",
    "tests/dags/test_refresh_dag_run.py",
    "tests/spark/test_steering.py",
    "tests/faults/test_stream.py",
    "tests/faults/test_full_disk.py",
    "tests/spark/test_evaluation.py",
    "tests/unit/test_eval_peers.py",
    "tests/spark/test_incremental.py",
)


def pytest_collection_modifyitems(config, items):
    """Runs the ``SLOW_FIRST`` files first; the order within a file, and of the other files, is kept."""
    rank = {path: n for n, path in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))


def make_settings(root: Path, env: dict[str, str] | None = None):
    """Settings of conf/local.yaml with the lake under ``root``, plus INTERESTLAKE__ overrides."""
    from interestlake.settings import load_settings

    env = {"INTERESTLAKE__LAKE__ROOT": str(root), "INTERESTLAKE__SPARK__MASTER": "local[2]", **(env or {})}
    return load_settings(REPO / "conf" / "local.yaml", env=env)


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    """One local[2] session shared by every Spark test (starting one costs seconds)."""
    from interestlake.spark_session import build_spark_session

    settings = make_settings(
        tmp_path_factory.mktemp("unused-lake"), {"INTERESTLAKE__SPARK__CONF__spark.sql.shuffle.partitions": "4"}
    )
    with pytest.MonkeyPatch.context() as patch:
        # This JVM lives for the whole run: it keeps the server JIT (TEST_JVM_OPTIONS are for the short-lived ones).
        if os.environ.get("SPARK_SUBMIT_OPTS") == TEST_JVM_OPTIONS:
            patch.delenv("SPARK_SUBMIT_OPTS")
        session = build_spark_session(settings)
    yield session
    session.stop()


@pytest.fixture
def settings(tmp_path):
    """Settings whose lake lives in this test's temporary folder."""
    return make_settings(tmp_path / "lake")


@pytest.fixture
def lake(spark, settings):
    """The default (delta-rs) table layer over an empty lake with every table created."""
    from interestlake.lake.tables import open_lake

    tables = open_lake(spark, settings.lake)
    tables.ensure_tables()
    return tables


@pytest.fixture
def pipeline(spark, lake, settings):
    from interestlake.pipeline.refresh import Pipeline

    return Pipeline(spark, lake, settings)


@pytest.fixture(autouse=True)
def _offline():
    """Every test runs as CI does: no model hub."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory) -> Path:
    """AIRFLOW_HOME with a migrated SQLite DB, the project's DAG folder and a local Spark connection."""
    home = tmp_path_factory.mktemp("airflow-home")
    env = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAG_FOLDER),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        # What `make airflow` defines too: spark-submit in local mode.
        "AIRFLOW_CONN_SPARK_DEFAULT": json.dumps({"conn_type": "spark", "host": "local[2]"}),
        # spark-submit comes with pyspark, next to this interpreter.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        subprocess.run(
            [sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True, text=True, timeout=300
        )
        yield home


@pytest.fixture(scope="session")
def dag_bag(airflow_home):
    """The DAG folder parsed the way Airflow's DAG processor parses a bundle."""
    from airflow.dag_processing.dagbag import BundleDagBag

    # Airflow's logging set-up lets py4j's INFO messages through, and py4j logs one when
    # the test session's gateway is collected at exit, after the streams are closed.
    logging.getLogger("py4j").setLevel(logging.WARNING)
    return BundleDagBag(dag_folder=str(DAG_FOLDER), bundle_path=str(DAG_FOLDER), bundle_name="dags-folder")
