"""Plots of an evaluation (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def metric_at_k_plot(curves: pd.DataFrame, metric: str, path: Path, title: str) -> Path:
    """One line per method: ``metric`` for K = 1..max_k.

    Args:
        curves: Rows of (method, k, recall, ndcg, ...).
        metric: Column to plot.
        path: PNG to write.
        title: Plot title.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method, rows in curves.groupby("method", sort=True):
        ax.plot(rows["k"], rows[metric], label=method, linewidth=1.6)
    ax.set_xlabel("K")
    ax.set_ylabel(f"{metric}@K")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def by_history_plot(table: pd.DataFrame, metric: str, path: Path, title: str) -> Path:
    """Grouped bars: ``metric`` per method for each bucket of training history length."""
    plt = _pyplot()
    pivot = table.pivot(index="history_length", columns="method", values=metric)
    pivot = pivot.reindex(list(dict.fromkeys(table["history_length"])))
    fig, ax = plt.subplots(figsize=(8, 4.5))
    pivot.plot.bar(ax=ax, rot=0)
    ax.set_xlabel("training interactions of the user")
    ax.set_ylabel(metric)
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
