"""Airflow for the DAG tests: a temporary AIRFLOW_HOME with a migrated SQLite metadata DB.

Airflow reads its configuration when it is first imported, so the environment is
set by the session fixture below and every test imports Airflow only after it.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

DAG_FOLDER = REPO / "airflow_dags"


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
