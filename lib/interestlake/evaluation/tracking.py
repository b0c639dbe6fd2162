"""Logs an evaluation to MLflow as one run: parameters, metrics of every method, artifacts.

Metric names are ``<method>.<metric>`` (e.g. ``interestlake.ndcg``, ``als.cold_recall``)
at the evaluation's K; the curves are logged as ``<method>.recall_at_k`` and
``<method>.ndcg_at_k`` with K as the step. Artifacts: ``metrics.csv`` and
``metrics.json`` (the table and the printed JSON), ``curves.csv``,
``by_history_length.csv``, ``<method>_grid.csv`` (the validation grid of ALS and of each
peer) and the plots ``recall_at_k.png``,
``ndcg_at_k.png`` and ``ndcg_by_history_length.png``.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pandas as pd

from interestlake.evaluation.plots import by_history_plot, metric_at_k_plot
from interestlake.evaluation.runner import EvaluationResult
from interestlake.models import registry
from interestlake.settings import Settings


def log_evaluation(result: EvaluationResult, settings: Settings, run_name: str | None = None) -> str:
    """Writes ``result`` as an MLflow run in ``mlflow.experiment`` and returns the run id.

    Also sets ``result.mlflow_run_id``.
    """
    import mlflow

    registry.configure(settings)
    experiment = registry.experiment_id(settings, settings.mlflow.experiment)
    name = run_name or f"{result.dataset} {result.protocol}"
    with mlflow.start_run(experiment_id=experiment, run_name=name) as run:
        result.mlflow_run_id = run.info.run_id
        mlflow.set_tags({"dataset": result.dataset, "protocol": result.protocol})
        mlflow.log_params({key: ("" if value is None else value) for key, value in result.params.items()})
        mlflow.log_params({f"count_{key}": value for key, value in result.counts.items()})
        mlflow.log_metrics({
            f"{method}.{metric}": value for method, values in result.methods.items() for metric, value in values.items()
        })
        mlflow.log_metrics({f"seconds.{name}": value for name, value in result.seconds.items()})
        for row in result.curves.itertuples(index=False):
            mlflow.log_metrics({f"{row.method}.recall_at_k": row.recall, f"{row.method}.ndcg_at_k": row.ndcg}, step=int(row.k))
        with tempfile.TemporaryDirectory() as folder:
            for path in write_artifacts(result, Path(folder)):
                mlflow.log_artifact(str(path))
    return result.mlflow_run_id


def write_artifacts(result: EvaluationResult, folder: Path) -> list[Path]:
    """Metric tables and plots of one evaluation under ``folder``."""
    title = f"{result.dataset}, {result.protocol}"
    paths = [folder / "metrics.csv", folder / "metrics.json", folder / "curves.csv", folder / "by_history_length.csv"]
    result.table().to_csv(paths[0])
    paths[1].write_text(json.dumps(result.to_json(), indent=2) + "\n", encoding="utf-8")
    result.curves.to_csv(paths[2], index=False)
    result.by_history.to_csv(paths[3], index=False)
    for method, rows in result.grids.items():
        paths.append(folder / f"{method}_grid.csv")
        pd.DataFrame(rows).to_csv(paths[-1], index=False)
    if not result.curves.empty:
        paths.append(metric_at_k_plot(result.curves, "recall", folder / "recall_at_k.png", f"Recall@K, {title}"))
        paths.append(metric_at_k_plot(result.curves, "ndcg", folder / "ndcg_at_k.png", f"NDCG@K, {title}"))
    if not result.by_history.empty:
        paths.append(by_history_plot(result.by_history, "ndcg", folder / "ndcg_by_history_length.png",
                                     f"NDCG@{result.k} by history length, {title}"))
    return paths
