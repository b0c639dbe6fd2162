"""interestlake_refresh: fresh recommendations every five minutes.

ingest -> encode -> interests -> recommend, each stage one ``spark-submit`` of
``jobs/<stage>.py`` through the ``spark_default`` connection, with the run's id
and logical date: a retried task commits nothing twice, and a run reads only
what arrived since the last one. One run at a time (``max_active_runs=1``), no
catch-up: a late refresh simply takes in more. ``recommend`` updates the Asset
``interestlake.recommendations`` for downstream DAGs.

While ``interestlake stream`` holds the lake (continuous mode), every task skips: the
stream already takes each landing file to the recommendations within seconds.
"""

from __future__ import annotations

import sys
from pathlib import Path

from airflow.sdk import DAG, CronTriggerTimetable

# Airflow's DAG processor puts the DAG folder on sys.path; `airflow dags ... --local` does not.
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from interestlake_common import DAG_ARGS, pipeline_tasks  # noqa: E402

with DAG(
    dag_id="interestlake_refresh",
    description="landing files -> fresh top-K recommendations, every five minutes",
    schedule=CronTriggerTimetable("*/5 * * * *", timezone="UTC"),
    doc_md=__doc__,
    **DAG_ARGS,
):
    pipeline_tasks(skip_while_streaming=True)
