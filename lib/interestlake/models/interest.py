"""Interest vectors of one user from the embeddings of their history (numpy only).

Long-term: a time-decayed, event-type-weighted mean of every history vector,
    long = normalize(sum_i w_i * 2^(-(t_ref - t_i) / half_life) * h_i).
The ratio form makes it independent of the reference time t_ref (all terms scale
by the same factor), so it does not drift while a user is idle.

Short-term: attention over the last N history vectors (the seed design),
    a_i = softmax_i(h_i^T A q / temperature),  short = normalize(sum_i a_i h_i),
with q the mean of those N vectors (the current session's centre) and A the
identity until a learned A exists.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

_SECONDS_PER_DAY = 86_400.0


@dataclass(frozen=True)
class InterestParams:
    """Parameters of the interest formulas (see ``interests`` in conf)."""

    half_life_days: float
    event_weights: Mapping[str, float]
    short_term_events: int
    attention_temperature: float
    long_term_weight: float


@dataclass(frozen=True)
class UserInterest:
    """The vectors stored in ``user_interests`` for one user."""

    long_term: np.ndarray
    short_term: np.ndarray
    interest: np.ndarray


def normalize(vector: np.ndarray) -> np.ndarray:
    """Unit-length copy; a zero vector stays zero."""
    norm = float(np.linalg.norm(vector))
    return (vector / norm).astype(np.float32) if norm > 0 else vector.astype(np.float32)


def user_interest(
    vectors: np.ndarray,
    kinds: Sequence[str],
    seconds: np.ndarray,
    params: InterestParams,
    attention: np.ndarray | None = None,
) -> UserInterest:
    """Computes one user's long-term, short-term and blended interest vectors.

    Args:
        vectors: History embeddings, shape (n, d), any order.
        kinds: Event type of each row (``view`` ... ``review``), weights from ``params``.
        seconds: Event time of each row, epoch seconds.
        params: Formula parameters.
        attention: Learned attention matrix A, shape (d, d); identity when None.

    Returns:
        Unit-length vectors; ``interest`` is what recommendations are scored with.

    Raises:
        ValueError: On empty history or mismatched lengths.
    """
    vectors = np.asarray(vectors, dtype=np.float64)
    seconds = np.asarray(seconds, dtype=np.float64)
    if vectors.ndim != 2 or len(vectors) == 0:
        raise ValueError(f"need a non-empty (n, d) history, got shape {vectors.shape}")
    if not len(vectors) == len(kinds) == len(seconds):
        raise ValueError(f"history lengths differ: {len(vectors)} vectors, {len(kinds)} kinds, {len(seconds)} times")
    order = np.argsort(seconds, kind="stable")
    vectors, seconds = vectors[order], seconds[order]
    kinds = [kinds[i] for i in order]

    type_weight = np.array([params.event_weights.get(kind, 0.0) for kind in kinds])
    age_days = (seconds[-1] - seconds) / _SECONDS_PER_DAY
    decayed = type_weight * np.exp2(-age_days / params.half_life_days)
    if decayed.sum() > 0:
        long_term = normalize(decayed @ vectors)
    else:
        long_term = normalize(vectors.mean(axis=0))

    recent = vectors[-params.short_term_events :]
    query = recent.mean(axis=0)
    keys = recent if attention is None else recent @ attention
    logits = keys @ query / params.attention_temperature
    weights = np.exp(logits - logits.max())
    short_term = normalize((weights / weights.sum()) @ recent)

    blend = params.long_term_weight
    return UserInterest(long_term, short_term, normalize(blend * long_term + (1 - blend) * short_term))
