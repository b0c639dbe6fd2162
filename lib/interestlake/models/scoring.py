"""Top-K cosine scoring of a block of users against a block of items, with reasons (numpy only)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from interestlake import constants as C

REASON_TEMPLATES = {
    C.EVENT_VIEW: 'Similar to "{label}", which you viewed',
    C.EVENT_CLICK: 'Similar to "{label}", which you looked at',
    C.EVENT_CART: 'Similar to "{label}" in your cart',
    C.EVENT_PURCHASE: 'Goes with "{label}", which you bought',
    C.EVENT_RATE: 'Similar to "{label}", which you rated',
    C.EVENT_REVIEW: 'Similar to "{label}", which you reviewed',
    C.EVENT_SEARCH: 'Matches your search "{label}"',
}
# When the recommended item itself is in the recent history (viewed, not bought).
SAME_ITEM_TEMPLATES = {
    C.EVENT_VIEW: "You viewed this recently",
    C.EVENT_CLICK: "You looked at this recently",
    C.EVENT_CART: "Still in your cart",
    C.EVENT_RATE: "You rated this",
}
FALLBACK_REASON = "Matches your interests"
_LABEL_LIMIT = 80


def top_k_block(
    user_vectors: np.ndarray, item_vectors: np.ndarray, k: int, excluded: Sequence[Sequence[int]]
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Best ``k`` items of the block for each user, excluded items never chosen.

    Args:
        user_vectors: Unit interest vectors, shape (u, d).
        item_vectors: Unit item vectors, shape (i, d).
        k: Items to keep per user.
        excluded: For each user, indices into ``item_vectors`` never to recommend.

    Returns:
        Per user: (item indices, scores), best first; ties broken by lower index.
        A user gets fewer than ``k`` when the block has fewer eligible items.
    """
    if len(excluded) != len(user_vectors):
        raise ValueError(f"{len(user_vectors)} users but {len(excluded)} exclusion lists")
    scores = user_vectors.astype(np.float32) @ item_vectors.astype(np.float32).T
    for row, items in enumerate(excluded):
        if len(items):
            scores[row, np.asarray(items, dtype=np.int64)] = -np.inf
    keep = min(k, item_vectors.shape[0])
    if keep == 0:
        return [(np.empty(0, np.int64), np.empty(0, np.float32)) for _ in range(len(user_vectors))]
    # argpartition finds the top-k in O(i); only those k are sorted.
    candidates = np.argpartition(-scores, keep - 1, axis=1)[:, :keep]
    results = []
    for row, cand in enumerate(candidates):
        cand_scores = scores[row, cand]
        order = np.lexsort((cand, -cand_scores))
        cand, cand_scores = cand[order], cand_scores[order]
        eligible = np.isfinite(cand_scores)
        results.append((cand[eligible], cand_scores[eligible]))
    return results


def reason_for(
    item_id: str,
    item_vector: np.ndarray,
    history_vectors: np.ndarray,
    kinds: Sequence[str],
    labels: Sequence[str],
    history_items: Sequence[str | None],
) -> str:
    """Short text naming why an item is recommended.

    Args:
        item_id: The recommended item.
        item_vector: Its unit vector.
        history_vectors: The user's recent history vectors, newest first, shape (m, d).
        kinds: Entry types (event type or ``review``) of the history.
        labels: Item titles or query texts of the history.
        history_items: Item ids of the history (None for searches).

    Returns:
        "You viewed this recently" when the item itself is in the recent history,
        else a sentence naming the most similar history entry.
    """
    for kind, seen in zip(kinds, history_items):
        if seen == item_id and kind in SAME_ITEM_TEMPLATES:
            return SAME_ITEM_TEMPLATES[kind]
    if len(history_vectors) == 0:
        return FALLBACK_REASON
    best = int(np.argmax(history_vectors @ item_vector))
    label = (labels[best] or "").strip()
    template = REASON_TEMPLATES.get(kinds[best])
    if not label or template is None:
        return FALLBACK_REASON
    if len(label) > _LABEL_LIMIT:
        label = label[: _LABEL_LIMIT - 1].rstrip() + "…"
    return template.format(label=label)
