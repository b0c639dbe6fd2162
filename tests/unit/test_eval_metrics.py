"""Ranking metrics against hand-computed cases."""

import math

import numpy as np
import pandas as pd
import pytest

from interestlake.evaluation import metrics as M


def recs(rows):
    return pd.DataFrame(rows, columns=["user_id", "item_id", "rank"])


def relevant(rows):
    return pd.DataFrame(rows, columns=["user_id", "item_id"])


# u1 relevant {b, d}: list a, b, c, d -> hits at ranks 2 and 4.
# u2 relevant {x}: list x, y -> hit at rank 1.
# u3 relevant {z}: no list at all -> a miss.
RECS = recs([("u1", "a", 1), ("u1", "b", 2), ("u1", "c", 3), ("u1", "d", 4), ("u2", "x", 1), ("u2", "y", 2)])
TEST = relevant([("u1", "b"), ("u1", "d"), ("u2", "x"), ("u3", "z")])


def test_hand_computed_metrics_at_1_2_and_4():
    hits = M.ranking_hits(RECS, TEST, max_k=4)
    assert list(hits.users) == ["u1", "u2", "u3"]
    assert hits.hits.tolist() == [[False, True, False, True], [True, False, False, False], [False] * 4]
    assert hits.relevant.tolist() == [2, 1, 1]

    at2 = M.per_user_metrics(hits, 2)
    assert at2.loc["u1", "recall"] == pytest.approx(0.5)
    # DCG = 1/log2(3); IDCG with two relevant items = 1 + 1/log2(3).
    assert at2.loc["u1", "ndcg"] == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))
    assert at2.loc["u1", "mrr"] == pytest.approx(0.5)
    assert at2.loc["u2", "ndcg"] == pytest.approx(1.0)
    assert at2.loc["u3"].tolist() == [0.0, 0.0, 0.0, 0.0]

    at4 = M.per_user_metrics(hits, 4)
    assert at4.loc["u1", "recall"] == pytest.approx(1.0)
    assert at4.loc["u1", "ndcg"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3)))

    at1 = M.summary(hits, 1, catalog_size=10)
    assert at1["recall"] == pytest.approx((0 + 1 + 0) / 3)
    assert at1["hit_rate"] == pytest.approx(1 / 3)
    assert at1["mrr"] == pytest.approx(1 / 3)
    # Top-1 lists show a and x: 2 of 10 catalog items.
    assert at1["coverage"] == pytest.approx(0.2)
    assert M.summary(hits, 4, catalog_size=10)["coverage"] == pytest.approx(0.6)


def test_ideal_dcg_is_capped_at_k():
    # Five relevant items, K = 2, both shown items relevant: NDCG is 1, recall 2/5.
    hits = M.ranking_hits(recs([("u", "a", 1), ("u", "b", 2)]), relevant([("u", i) for i in "abcde"]), max_k=2)
    scores = M.per_user_metrics(hits, 2)
    assert scores.loc["u", "ndcg"] == pytest.approx(1.0)
    assert scores.loc["u", "recall"] == pytest.approx(0.4)


def test_ranks_past_max_k_and_users_not_evaluated_are_ignored():
    hits = M.ranking_hits(recs([("u", "a", 3), ("v", "a", 1)]), relevant([("u", "a")]), max_k=2)
    assert list(hits.users) == ["u"]
    assert not hits.hits.any()


def test_curves_are_monotone_in_recall():
    curve = M.curves(M.ranking_hits(RECS, TEST, max_k=4), range(1, 5))
    assert list(curve.index) == [1, 2, 3, 4]
    assert np.all(np.diff(curve["recall"].to_numpy()) >= 0)
    assert curve.loc[4, "recall"] == pytest.approx((1 + 1 + 0) / 3)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="same \\(user, rank\\)"):
        M.ranking_hits(recs([("u", "a", 1), ("u", "b", 1)]), relevant([("u", "a")]), max_k=2)
    with pytest.raises(ValueError, match="lack column"):
        M.ranking_hits(RECS.drop(columns="rank"), TEST, max_k=2)
    with pytest.raises(ValueError, match="k must be in"):
        M.per_user_metrics(M.ranking_hits(RECS, TEST, max_k=2), 3)
