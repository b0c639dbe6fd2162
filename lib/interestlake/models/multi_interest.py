"""Several interests per user: clusters of the recent history vectors (numpy only).

Average-linkage agglomerative clustering of a user's recent entries (at most
``interests.short_term_events`` of them, so the cost is tiny): the two clusters whose
entries have the highest average cosine merge while that average is at least
``min_similarity``. Clusters holding at least ``min_share`` of the entries' weight are
interests of their own (at most ``max_interests``, heaviest first), as in multi-interest
retrieval: each retrieves its own candidates and the list is shared between them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from interestlake.models.interest import normalize


@dataclass(frozen=True)
class Interest:
    """One cluster of a user's recent history."""

    centre: np.ndarray
    share: float
    members: tuple[int, ...]


def cluster_interests(
    vectors: np.ndarray, weights: np.ndarray, min_similarity: float, max_interests: int, min_share: float
) -> list[Interest]:
    """The interests in a user's recent history.

    Args:
        vectors: Unit vectors of the recent entries, shape (n, d).
        weights: Weight of each entry, e.g. its event-type weight; a negative one marks a
            disliked entry, which is not clustered but takes its weight off the cluster it
            resembles (a cluster left with none is no interest).
        min_similarity: Clusters merge while the average cosine between them is at least this.
        max_interests: Most interests returned.
        min_share: Least share of the total weight a cluster needs to count.

    Returns:
        Interests, heaviest first (ties by first member), shares summing to 1; one interest
        (every liked entry) when the history does not split, none without liked entries.
        Member indices count the liked entries only.
    """
    all_vectors = np.asarray(vectors, dtype=np.float64)
    all_weights = np.asarray(weights, dtype=np.float64)
    liked = all_weights > 0
    vectors, weights = all_vectors[liked], all_weights[liked]
    if len(vectors) == 0:
        return []
    similarity = vectors @ vectors.T
    clusters: list[list[int]] = [[i] for i in range(len(vectors))]
    while len(clusters) > 1:
        best, pair = -np.inf, None
        for a in range(len(clusters)):
            for b in range(a + 1, len(clusters)):
                value = similarity[np.ix_(clusters[a], clusters[b])].mean()
                if value > best:
                    best, pair = value, (a, b)
        if best < min_similarity:
            break
        a, b = pair
        clusters[a] = sorted(clusters[a] + clusters[b])
        del clusters[b]
    # A disliked entry takes its weight off the cluster it resembles most (if it resembles one).
    liked_mass = np.array([weights[c].sum() for c in clusters])
    mass = liked_mass.copy()
    for vector, weight in zip(all_vectors[~liked], all_weights[~liked]):
        closeness = np.array([(vectors[c] @ vector).mean() for c in clusters])
        if closeness.max() >= min_similarity:
            mass[int(np.argmax(closeness))] += weight
    mass = np.clip(mass, 0, None)
    total = weights.sum()

    def kept(masses: np.ndarray) -> list[int]:
        order = sorted(range(len(clusters)), key=lambda i: (-masses[i], clusters[i][0]))
        return [i for i in order if masses[i] > 0 and masses[i] / total >= min_share][:max_interests]

    chosen = kept(mass)
    # One interest is the whole history, unless dislikes took the others away.
    if len(chosen) > 1 or (len(chosen) == 1 and len(kept(liked_mass)) > 1):
        chosen_mass = sum(mass[i] for i in chosen)
        return [Interest(normalize(weights[clusters[i]] @ vectors[clusters[i]]), float(mass[i] / chosen_mass),
                         tuple(clusters[i])) for i in chosen]
    return [Interest(normalize(weights @ vectors), 1.0, tuple(range(len(vectors))))]
