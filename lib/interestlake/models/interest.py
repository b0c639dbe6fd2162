"""Interest vectors of one user from the embeddings of their history (numpy only).

Long-term: a time-decayed, event-type-weighted mean of every history vector,
    long = normalize(S),  S = sum_i w_i * 2^(-(t_ref - t_i) / half_life) * h_i,
kept as running sufficient statistics (S, M = the same sum of weights, t_ref).
Folding in new entries rescales the old statistics to the newer reference time
and adds the new terms, which equals recomputing over the whole history up to
float rounding; for one new entry i of weight w it is the seed rule
u' = (1 - alpha) u + alpha i with u = S / M and alpha = w / (M * 2^(-dt / half_life) + w).
The direction does not depend on t_ref (all terms scale alike), so an idle
user's vector does not drift.

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
class DecayedStats:
    """Sufficient statistics of the long-term vector, decayed to ``ref_seconds``."""

    weighted_sum: np.ndarray
    mass: float
    ref_seconds: float


@dataclass(frozen=True)
class UserInterest:
    """The vectors stored in ``user_interests`` for one user."""

    long_term: np.ndarray
    short_term: np.ndarray
    interest: np.ndarray
    stats: DecayedStats


def normalize(vector: np.ndarray) -> np.ndarray:
    """Unit-length float32 copy; a zero vector stays zero."""
    norm = float(np.linalg.norm(vector))
    return (vector / norm).astype(np.float32) if norm > 0 else np.asarray(vector, dtype=np.float32)


def _check_history(vectors: np.ndarray, kinds: Sequence[str], seconds: np.ndarray) -> None:
    if vectors.ndim != 2 or len(vectors) == 0:
        raise ValueError(f"need a non-empty (n, d) history, got shape {vectors.shape}")
    if not len(vectors) == len(kinds) == len(seconds):
        raise ValueError(f"history lengths differ: {len(vectors)} vectors, {len(kinds)} kinds, {len(seconds)} times")


def decayed_stats(vectors: np.ndarray, kinds: Sequence[str], seconds: np.ndarray, params: InterestParams) -> DecayedStats:
    """Statistics of a batch of history entries, referenced at their newest time."""
    vectors = np.asarray(vectors, dtype=np.float64)
    seconds = np.asarray(seconds, dtype=np.float64)
    _check_history(vectors, kinds, seconds)
    ref = float(seconds.max())
    weights = np.array([params.event_weights.get(kind, 0.0) for kind in kinds])
    weights = weights * np.exp2(-(ref - seconds) / _SECONDS_PER_DAY / params.half_life_days)
    return DecayedStats(weights @ vectors, float(weights.sum()), ref)


def fold(state: DecayedStats | None, new: DecayedStats | None, half_life_days: float) -> DecayedStats | None:
    """Combines two sets of statistics at the later of their reference times."""
    if state is None or new is None:
        return new if state is None else state
    ref = max(state.ref_seconds, new.ref_seconds)
    old_scale = 2.0 ** (-(ref - state.ref_seconds) / _SECONDS_PER_DAY / half_life_days)
    new_scale = 2.0 ** (-(ref - new.ref_seconds) / _SECONDS_PER_DAY / half_life_days)
    return DecayedStats(
        state.weighted_sum * old_scale + new.weighted_sum * new_scale,
        state.mass * old_scale + new.mass * new_scale,
        ref,
    )


def short_term(recent: np.ndarray, params: InterestParams, attention: np.ndarray | None = None) -> np.ndarray:
    """Attention-pooled vector of the most recent entries (oldest first, at most N used)."""
    recent = np.asarray(recent, dtype=np.float64)[-params.short_term_events :]
    if len(recent) == 0:
        raise ValueError("need at least one recent history vector")
    query = recent.mean(axis=0)
    keys = recent if attention is None else recent @ attention
    logits = keys @ query / params.attention_temperature
    weights = np.exp(logits - logits.max())
    return normalize((weights / weights.sum()) @ recent)


def combine(stats: DecayedStats, recent: np.ndarray, params: InterestParams, attention: np.ndarray | None = None) -> UserInterest:
    """The stored vectors from long-term statistics and the recent history (oldest first)."""
    short = short_term(recent, params, attention)
    long = normalize(stats.weighted_sum) if stats.mass > 0 else short
    blend = params.long_term_weight
    return UserInterest(long, short, normalize(blend * long + (1 - blend) * short), stats)


def user_interest(
    vectors: np.ndarray,
    kinds: Sequence[str],
    seconds: np.ndarray,
    params: InterestParams,
    attention: np.ndarray | None = None,
) -> UserInterest:
    """Computes one user's vectors from their whole history.

    Args:
        vectors: History embeddings, shape (n, d), any order.
        kinds: Event type of each row (``view`` ... ``review``), weights from ``params``.
        seconds: Event time of each row, epoch seconds.
        params: Formula parameters.
        attention: Learned attention matrix A, shape (d, d); identity when None.

    Returns:
        Unit-length vectors (``interest`` is what recommendations are scored with)
        and the long-term statistics to fold later entries into.

    Raises:
        ValueError: On empty history or mismatched lengths.
    """
    vectors = np.asarray(vectors, dtype=np.float64)
    seconds = np.asarray(seconds, dtype=np.float64)
    _check_history(vectors, kinds, seconds)
    order = np.argsort(seconds, kind="stable")
    stats = decayed_stats(vectors, kinds, seconds, params)
    return combine(stats, vectors[order], params, attention)
