"""Intra-list similarity of every method's lists, measured with our item vectors.

ILS@K = the mean over test users of the mean pairwise cosine of their top-K items (lower
is more diverse), with the item vectors of the evaluation lake's ``item_embeddings``, so
that every method is measured with the same ruler.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from interestlake import constants as C
from interestlake.models.diversity import intra_list_similarity
from interestlake.settings import Settings


def evaluation_item_vectors(spark, settings: Settings, dataset: str, encoder_version: str) -> dict[str, np.ndarray]:
    """item id -> unit vector of the dataset's evaluation lake (empty when it has none)."""
    from interestlake.lake.tables import LakeError, open_lake

    root = settings.evaluation.lake_root or f"{settings.lake.root.rstrip('/')}/evaluation"
    lake = open_lake(spark, settings.lake.model_copy(update={"root": f"{root.rstrip('/')}/{dataset}", "landing": None}))
    try:
        rows = (
            lake.read(C.ITEM_EMBEDDINGS)
            .filter(f"{C.COL_ENCODER_VERSION} = '{encoder_version}'")
            .select(C.COL_ITEM_ID, C.COL_EMBEDDING)
            .toPandas()
        )
    except LakeError:
        return {}
    return {item: np.asarray(vector, dtype=np.float64) for item, vector in zip(rows[C.COL_ITEM_ID], rows[C.COL_EMBEDDING])}


def list_similarity(recs: pd.DataFrame, vectors: dict[str, np.ndarray], k: int) -> float:
    """ILS@K averaged over users (items without a vector are left out of a list)."""
    top = recs[recs[C.COL_RANK] <= k].sort_values([C.COL_USER_ID, C.COL_RANK])
    values = []
    for _, items in top.groupby(C.COL_USER_ID)[C.COL_ITEM_ID]:
        matrix = [vectors[item] for item in items if item in vectors]
        if len(matrix) >= 2:
            values.append(intra_list_similarity(np.array(matrix)))
    return float(np.mean(values)) if values else float("nan")


def add_list_similarity(spark, settings: Settings, dataset: str, encoder_version: str, lists: dict, scores: dict,
                        k: int) -> None:
    """Adds ``ils`` (of the full-history lists) to each method's scores."""
    vectors = evaluation_item_vectors(spark, settings, dataset, encoder_version)
    if not vectors:
        return
    for name, by_mode in lists.items():
        scores[name]["ils"] = list_similarity(by_mode["full"], vectors, k)
