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
# to the cluster's daemons and executors. From the first test on, the drivers also map Spark's
# classes from an archive (the `jvm_class_archive` fixture below).
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


# The JVM says nothing about its class archive (AppCDS): a JVM whose class path does not match
# the archive runs without it, silently, and a CLI's stdout and stderr stay the product's own.
CLASS_ARCHIVE_QUIET = "-Xlog:cds=off -Xlog:cds+dynamic=off"


def class_archive_options(archive: Path) -> str:
    """JVM options that map the classes of ``archive`` (written by ``jvm_class_archive``)."""
    return f"-XX:SharedArchiveFile={archive} {CLASS_ARCHIVE_QUIET}"


@pytest.fixture(scope="session", autouse=True)
def jvm_class_archive(request, tmp_path_factory):
    """Every later driver JVM maps Spark's classes from an archive written once, at the run's start.

    A fresh Spark driver spends seconds loading and verifying Spark's classes from the jars
    before its first job; JDK 17 can dump the classes one JVM loaded into a file
    (``-XX:ArchiveClassesAtExit``) that later JVMs with the same class path map instead
    (``-XX:SharedArchiveFile``). The archive is written by a ``spark-submit`` of one refresh of
    a tiny generated lake (about 45 s on 2 idle cores; ``spark-submit`` waits for its JVM,
    which writes the archive as it exits), and then reaches every short-lived driver through
    ``SPARK_SUBMIT_OPTS``: one small refresh in a fresh process took 24 s instead of 32 s
    (docs/testing.md). Skipped when no collected test starts Spark drivers (none marked
    ``spark``, ``e2e``, ``faults`` or ``cluster``, none using the ``spark`` fixture: a run of
    quick files does not pay the 45 s) or when the caller set ``SPARK_SUBMIT_OPTS`` itself;
    should the dump fail, the run goes on without an archive. Each pytest-xdist worker writes its own.

    Yields:
        The archive's path, or None without one.
    """
    needs_jvms = any(_starts_spark_drivers(item) for item in request.session.items)
    if not needs_jvms or os.environ.get("SPARK_SUBMIT_OPTS") != TEST_JVM_OPTIONS:
        yield None
        return
    archive = _dump_class_archive(tmp_path_factory.mktemp("jvm-class-archive"))
    if archive is None:
        yield None
        return
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SPARK_SUBMIT_OPTS", f"{TEST_JVM_OPTIONS} {class_archive_options(archive)}")
        yield archive
    # About 200 MB; pytest keeps the last runs' temporary folders (a JVM still mapping it keeps its copy).
    archive.unlink(missing_ok=True)


# Markers of the tests that start Spark drivers (sessions, CLI processes, spark-submits).
JVM_MARKERS = ("spark", "e2e", "faults", "cluster")


def _starts_spark_drivers(item) -> bool:
    return any(item.get_closest_marker(name) for name in JVM_MARKERS) or "spark" in getattr(item, "fixturenames", ())


def _dump_class_archive(folder: Path) -> Path | None:
    """Runs one refresh of a tiny lake under ``spark-submit`` with the JVM dumping its classes at exit."""
    import pyspark

    from interestlake.datasets.sample import generate_sample

    archive, root = folder / "spark-classes.jsa", folder / "lake"
    generate_sample(make_settings(root).lake.landing_uri, seed=5, n_users=4, n_items=8, days=3)
    env = {
        **os.environ,
        "SPARK_HOME": str(Path(pyspark.__file__).parent),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYSPARK_PYTHON": sys.executable,
        "INTERESTLAKE__LAKE__ROOT": str(root),
        "SPARK_SUBMIT_OPTS": f"{TEST_JVM_OPTIONS} -XX:ArchiveClassesAtExit={archive} {CLASS_ARCHIVE_QUIET}",
    }
    command = [str(Path(sys.executable).parent / "spark-submit"), "--master", "local[2]", "--conf",
               "spark.ui.enabled=false", str(REPO / "jobs" / "refresh.py"), "--conf", str(REPO / "conf" / "local.yaml")]
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        logging.getLogger(__name__).warning("no JVM class archive: %s", exc)
        return None
    if done.returncode != 0 or not archive.is_file():
        logging.getLogger(__name__).warning("no JVM class archive (exit %s): %s", done.returncode, done.stderr[-2000:])
        return None
    return archive


@pytest.fixture(scope="session")
def spark(tmp_path_factory, jvm_class_archive):
    """One local[2] session shared by every Spark test (starting one costs seconds)."""
    from interestlake.spark_session import build_spark_session

    settings = make_settings(
        tmp_path_factory.mktemp("unused-lake"), {"INTERESTLAKE__SPARK__CONF__spark.sql.shuffle.partitions": "4"}
    )
    with pytest.MonkeyPatch.context() as patch:
        # This JVM lives for the whole run: it keeps the server JIT (TEST_JVM_OPTIONS are for the
        # short-lived ones), and maps the class archive where there is one.
        if jvm_class_archive is not None:
            patch.setenv("SPARK_SUBMIT_OPTS", class_archive_options(jvm_class_archive))
        elif os.environ.get("SPARK_SUBMIT_OPTS") == TEST_JVM_OPTIONS:
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
