"""Protocols, cold-start truncation, the leakage guard and the numpy baselines."""

import numpy as np
import pandas as pd
import pytest

from interestlake import constants as C
from interestlake.datasets.public import PublicDataset, items_from_reviews
from interestlake.evaluation import baselines as B
from interestlake.evaluation import metrics as M
from interestlake.evaluation import protocols as P
from interestlake.evaluation.leakage import LeakageError, check_no_leakage
from interestlake.evaluation.pipeline_method import training_tables
from tests.conftest import SHARED_DATA


def interactions(rows):
    return pd.DataFrame(
        [(u, i, pd.Timestamp(t, unit="D", tz="UTC")) for u, i, t in rows], columns=[C.COL_USER_ID, C.COL_ITEM_ID, C.COL_TS]
    )


INTERACTIONS = interactions([
    ("u1", "a", 1), ("u1", "b", 2), ("u1", "c", 3),
    ("u2", "a", 1), ("u2", "c", 5), ("u2", "d", 5),  # d and c at the same time: d comes later in the input
    ("u3", "b", 4),                                    # one interaction: trains only
])


def test_leave_last_out_takes_each_users_last_interaction():
    split = P.make_split("leave-last-out", INTERACTIONS)
    assert sorted(map(tuple, split.test[[C.COL_USER_ID, C.COL_ITEM_ID]].values)) == [("u1", "c"), ("u2", "d")]
    assert len(split.train) == 5 and "u3" in set(split.train[C.COL_USER_ID])
    random_ties = {P.make_split("leave-last-out", INTERACTIONS, seed=s, ties="random").test.iloc[-1][C.COL_ITEM_ID]
                   for s in range(20)}
    assert random_ties == {"c", "d"}


def test_temporal_cut_and_users_without_history():
    split = P.make_split("temporal", INTERACTIONS, cut="1970-01-05T00:00:00Z")
    assert (split.train[C.COL_TS] < pd.Timestamp("1970-01-05", tz="UTC")).all()
    # u2's day-5 items are test; u3 had nothing before the cut but its item is before it.
    assert sorted(split.test[C.COL_ITEM_ID]) == ["c", "d"]
    late = interactions([("u1", "a", 1), ("u9", "b", 9)])
    with pytest.raises(ValueError, match="no test user"):
        P.make_split("temporal", late, cut="1970-01-05T00:00:00Z")


def test_stratified_follows_the_recommenders_rule_per_item():
    rows = [(f"u{n}", "popular", n) for n in range(8)] + [("u0", "single", 1), ("u1", "pair", 1), ("u2", "pair", 2)]
    split = P.make_split("stratified", interactions(rows), seed=3, ratio=0.75)
    per_item = split.train.groupby(C.COL_ITEM_ID).size()
    assert per_item["popular"] == 6  # positions 1..6 of 8 have position / count <= 0.75
    assert per_item["pair"] == 1     # 1/2 <= 0.75 < 2/2
    assert "single" not in per_item  # 1/1 > 0.75: a lone interaction is test
    other_seed = P.make_split("stratified", interactions(rows), seed=4, ratio=0.75)
    assert not split.train.equals(other_seed.train)
    assert len(other_seed.train) == len(split.train)


def test_truncated_histories_keep_the_last_n_of_chosen_users_only():
    kept = P.truncate_histories(INTERACTIONS, np.array(["u1"]), keep=2)
    assert sorted(kept.loc[kept[C.COL_USER_ID] == "u1", C.COL_ITEM_ID]) == ["b", "c"]
    assert (kept[C.COL_USER_ID] == "u2").sum() == 3


def amazon_like():
    """Two users; each one's last review is its test interaction and carries a marker text."""
    rows = [("u1", "a", 1, "solid stand, holds a bass"), ("u1", "b", 2, "bright strings for folk"),
            ("u1", "c", 3, "TESTMARKER tuner that clips on the headstock"),
            ("u2", "a", 1, "stand is wobbly but cheap"), ("u2", "c", 2, "clip tuner reads fast and clear"),
            ("u2", "b", 3, "TESTMARKER strings sound dull after a week")]
    ts = [pd.Timestamp(t, unit="D", tz="UTC") for _, _, t, _ in rows]
    reviews = pd.DataFrame({C.COL_REVIEW_ID: [f"r{n}" for n in range(len(rows))], C.COL_USER_ID: [r[0] for r in rows],
                            C.COL_ITEM_ID: [r[1] for r in rows], C.COL_RATING: 5.0, C.COL_TEXT: [r[3] for r in rows],
                            C.COL_TS: ts})
    events = pd.DataFrame({C.COL_EVENT_ID: [f"e{n}" for n in range(len(rows))], C.COL_USER_ID: reviews[C.COL_USER_ID],
                           C.COL_ITEM_ID: reviews[C.COL_ITEM_ID], C.COL_EVENT_TYPE: "purchase", C.COL_TS: ts})
    return PublicDataset("amazon-reviews", events, reviews, None, pd.DataFrame())


def test_leakage_guard_passes_the_real_training_side_and_fails_on_leaks():
    data = amazon_like()
    split = P.make_split("leave-last-out", P.interactions_from_events(data.events))
    tables = training_tables(data, split.train)
    test_texts = data.reviews.loc[~data.reviews[C.COL_REVIEW_ID].isin(tables.reviews[C.COL_REVIEW_ID]), C.COL_TEXT]
    # The training side holds no test pair, no test-period text, and items built from training reviews only.
    assert not tables.reviews[C.COL_TEXT].str.contains("TESTMARKER").any()
    assert not tables.items[C.COL_DESCRIPTION].str.contains("TESTMARKER").any()
    check_no_leakage(split, tables.events, tables.reviews, tables.items, test_texts)
    # Popularity counts come from the training part: item c counts u2's purchase only.
    catalog = B.Catalog.of(split.train)
    counts = B.Popularity().fit(catalog.matrix(split.train)).counts
    assert dict(zip(catalog.items, counts)) == {"a": 2.0, "b": 1.0, "c": 1.0}

    leaked_items = items_from_reviews(data.reviews)  # built from every review, test ones included
    with pytest.raises(LeakageError, match="item texts contain"):
        check_no_leakage(split, tables.events, tables.reviews, leaked_items, test_texts)
    with pytest.raises(LeakageError, match="pipeline reviews hold"):
        check_no_leakage(split, tables.events, data.reviews, tables.items, test_texts)
    leaky_split = P.Split(split.protocol, split.params, pd.concat([split.train, split.test]), split.test)
    with pytest.raises(LeakageError, match="training interactions hold"):
        check_no_leakage(leaky_split, tables.events, tables.reviews, tables.items, test_texts)


def test_popularity_and_item_knn_on_a_hand_computed_case():
    # Users x items (a, b, c): u1 {a, b}, u2 {a, c}, u3 {a}.
    train = interactions([("u1", "a", 1), ("u1", "b", 1), ("u2", "a", 1), ("u2", "c", 1), ("u3", "a", 1)])
    catalog = B.Catalog.of(train)
    matrix = catalog.matrix(train)
    history = catalog.matrix(train, ["u3"])
    pop = B.recommend(B.Popularity().fit(matrix), catalog, history, ["u3"], 3)
    # a is seen; b and c tie at one interaction each: the lower index (b) first.
    assert pop[C.COL_ITEM_ID].tolist() == ["b", "c"]
    knn = B.ItemKNN().fit(matrix)
    scores = knn.score(catalog.matrix(train, ["u1"]))[0]
    # cos(a, c) = 1 / sqrt(3 * 1); u1 holds a and b, and cos(b, c) = 0.
    assert scores[2] == pytest.approx(1 / np.sqrt(3))
    assert B.recommend(knn, catalog, catalog.matrix(train, ["u1"]), ["u1"], 5)[C.COL_ITEM_ID].tolist() == ["c"]


AMAZON = SHARED_DATA / "amazon-2014-musical-instruments-5core"


@pytest.mark.skipif(not AMAZON.is_dir(), reason=f"{AMAZON} absent (shared evaluation data is not part of the repo)")
def test_baselines_match_the_reference_numbers_on_amazon_instruments():
    from interestlake.datasets.public import load_dataset

    data = load_dataset("amazon-reviews", AMAZON)
    split = P.make_split("leave-last-out", P.interactions_from_events(data.events))
    catalog = B.Catalog.of(split.train)
    users = split.test_users
    results = {}
    for model in (B.Popularity(), B.ItemKNN()):
        model.fit(catalog.matrix(split.train))
        recs = B.recommend(model, catalog, catalog.matrix(split.train, users), users, 10)
        results[model.name] = M.summary(M.ranking_hits(recs, split.test, 10, users), 10, len(catalog.items))
    # DESIGN.md section 6, measured with independent numpy code.
    assert results["popularity"]["recall"] == pytest.approx(0.078, abs=0.001)
    assert results["popularity"]["ndcg"] == pytest.approx(0.044, abs=0.001)
    assert results["item_knn"]["recall"] == pytest.approx(0.106, abs=0.001)
    assert results["item_knn"]["ndcg"] == pytest.approx(0.054, abs=0.001)
