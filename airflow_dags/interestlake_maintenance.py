"""interestlake_maintenance: daily Delta maintenance of the lake, then the interest model.

retention -> compact -> vacuum -> checkpoint, each one ``spark-submit`` of
``jobs/maintain.py --steps <step>`` holding the lake's writer lock (a refresh
stage that comes along waits for it, and the other way round), then
train_interest_model -> promote_interest_model:

- retention: deletes ``quarantine`` rows older than
  ``maintenance.quarantine_retention_days`` and ``pipeline_runs`` rows older than
  ``maintenance.pipeline_runs_retention_days`` (keeping each stage's last
  successful run, which the next run continues from);
- compact: rewrites small files into large ones (rows unchanged);
- vacuum: deletes files removed more than ``maintenance.vacuum_retention_hours``
  (>= 1) ago, except those of the table versions the stages' next runs read
  from, so no reader of the last hour and no incremental run loses a file;
- checkpoint: writes a Delta checkpoint of every table;
- train_interest_model: ``jobs/train.py`` fits the interest model on the tables and
  registers it in MLflow (``interestlake-interest-model``);
- promote_interest_model: ``jobs/promote.py`` makes the new version ``@champion`` when
  it beats the champion's validation NDCG (else leaves the alias where it is).

The retention cutoffs are taken from the run's logical date, so a retry deletes
exactly what the first try would have.
"""

from __future__ import annotations

import sys
from pathlib import Path

from airflow.sdk import DAG, CronTriggerTimetable, chain

# Airflow's DAG processor puts the DAG folder on sys.path; `airflow dags ... --local` does not.
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from interestlake_common import DAG_ARGS, InterestLakeJob  # noqa: E402

# The steps of `interestlake maintain`, in order (interestlake.constants.MAINTENANCE_STEPS).
MAINTENANCE_STEPS = ("retention", "compact", "vacuum", "checkpoint")

with DAG(
    dag_id="interestlake_maintenance",
    description="daily Delta maintenance (row retention, compaction, vacuum, checkpoints), then training and promotion of the interest model",
    # After midnight UTC, when refreshes are usually small.
    schedule=CronTriggerTimetable("30 2 * * *", timezone="UTC"),
    doc_md=__doc__,
    **DAG_ARGS,
):
    maintenance = [InterestLakeJob(job="maintain", task_id=step, job_args=["--steps", step]) for step in MAINTENANCE_STEPS]
    # The interest model is retrained on the compacted tables and registered; promote
    # makes the new version @champion only if it beats the champion's validation NDCG.
    # The next refresh applies whichever version is @champion then.
    train = InterestLakeJob(job="train", task_id="train_interest_model")
    promote = InterestLakeJob(job="promote", task_id="promote_interest_model")
    chain(*maintenance, train, promote)
