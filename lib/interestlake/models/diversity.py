"""Diversity: maximal marginal relevance picks and intra-list similarity (numpy only)."""

from __future__ import annotations

import numpy as np


def mmr_pick(relevance: np.ndarray, vectors: np.ndarray, chosen: np.ndarray, weight: float, allowed: np.ndarray) -> int:
    """Index of the next item by maximal marginal relevance.

    argmax over allowed i of (1 - weight) * relevance_i - weight * max_j cos(i, chosen_j);
    ties go to the lower index (candidates come sorted by relevance, then item id).

    Args:
        relevance: Relevance of each candidate, shape (c,).
        vectors: Unit vectors of the candidates, shape (c, d).
        chosen: Unit vectors of the items already listed, shape (m, d) (m may be 0).
        weight: 0 = plain relevance order; towards 1 = more diverse.
        allowed: Boolean mask of the candidates that may be picked.

    Returns:
        The index, or -1 when no candidate is allowed.
    """
    if not allowed.any():
        return -1
    score = np.where(allowed, relevance, -np.inf)
    if weight > 0 and len(chosen):
        redundancy = (vectors @ np.asarray(chosen).T).max(axis=1)
        score = np.where(allowed, (1 - weight) * relevance - weight * redundancy, -np.inf)
    return int(np.argmax(score))


def intra_list_similarity(vectors: np.ndarray) -> float:
    """Mean pairwise cosine of a list's unit item vectors (lower = more diverse); nan below two items."""
    vectors = np.asarray(vectors, dtype=np.float64)
    n = len(vectors)
    if n < 2:
        return float("nan")
    gram = vectors @ vectors.T
    return float((gram.sum() - np.trace(gram)) / (n * (n - 1)))
