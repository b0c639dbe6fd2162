"""Offline evaluation: protocols, metrics, baselines and our pipeline on public datasets, tracked in MLflow."""
