"""interestlake_catalog: re-encode the catalog when it changes, then re-score the users.

Runs when the Asset ``interestlake.landing.items`` is updated: by the DAG or
system that drops catalog files under ``<landing>/items/`` (an outlet of an
upstream DAG, ``POST /api/v2/assets/events``, or "Create Asset Event" in the
UI). It ingests what landed (one streaming source covers every landing
folder, so the catalog comes with any events that landed beside it), encodes
new and changed items, rebuilds the interests of users whose history touches a
changed item, and re-scores every user (a new or changed item can enter
anyone's top K).

``interestlake_refresh`` would pick the same files up within five minutes; this
DAG does it at once. Both write through the lake's single-writer lock, and the
stages are exactly-once, so whichever runs first does the work and the other
finds nothing to do.
"""

from __future__ import annotations

import sys
from pathlib import Path

from airflow.sdk import DAG

# Airflow's DAG processor puts the DAG folder on sys.path; `airflow dags ... --local` does not.
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from interestlake_common import CATALOG_LANDING_ASSET, DAG_ARGS, pipeline_tasks  # noqa: E402

with DAG(
    dag_id="interestlake_catalog",
    description="catalog files -> item vectors -> re-scored recommendations",
    schedule=[CATALOG_LANDING_ASSET],
    doc_md=__doc__,
    **DAG_ARGS,
):
    pipeline_tasks()
