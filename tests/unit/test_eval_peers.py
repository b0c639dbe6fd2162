"""The evaluation's peers (evaluation/peers.py), each fitted by its own library on small data.

Skipped, with the reason, where the ``peers`` extra is not installed (.ci/run installs it).
"""

import importlib.util

import numpy as np
import pandas as pd
import pytest

from interestlake import constants as C
from interestlake.evaluation import baselines as B
from interestlake.evaluation import peers as R
from interestlake.evaluation import protocols as P
from tests.conftest import SHARED_DATA

AMAZON = SHARED_DATA / "amazon-2014-musical-instruments-5core"
# Small settings so that each fit takes well under a second or two on 2 cores.
SEQUENTIAL = {"embedding_dim": 16, "n_epochs": 20, "max_len": 10, "n_sample": 16, "batch_size": 64,
              "learning_rate": 0.01, "dropout": 0.0}
TINY = {
    "sasrec": SEQUENTIAL,
    "bert4rec": SEQUENTIAL,
    "implicit_als": {"factors": 8, "iterations": 10, "regularization": 0.1, "alpha": 10.0},
    "implicit_bpr": {"factors": 8, "iterations": 200, "learning_rate": 0.05},
    "ease": {"lamb": 10.0, "posB": False},
    "bivae": {"k": 8, "encoder_structure": [16], "n_epochs": 100, "batch_size": 32, "learning_rate": 0.01},
}


def needs(name):
    library = R.PEERS[name].library
    return pytest.mark.skipif(importlib.util.find_spec(library) is None,
                              reason=f"{library} not installed (pip install -e '.[peers]')")


PEER_PARAMS = [pytest.param(name, marks=needs(name)) for name in R.PEERS]


def test_every_peer_has_a_tiny_setting_and_a_default_grid():
    from interestlake.settings import PeersSettings

    assert set(TINY) == set(R.PEERS) == set(PeersSettings().grids)


def two_taste_split(users=60, seed=3):
    """Two user groups, each with its own 10 items, 8 interactions a user in time order: easy signal."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(users):
        group = user % 2
        for step, item in enumerate(rng.choice(np.arange(10) + 10 * group, size=8, replace=False)):
            rows.append((f"u{user:03d}", f"i{item:02d}", pd.Timestamp(1_000_000 * user + step, unit="s", tz="UTC")))
    interactions = pd.DataFrame(rows, columns=[C.COL_USER_ID, C.COL_ITEM_ID, C.COL_TS])
    return P.make_split("leave-last-out", interactions)


@pytest.fixture(scope="module")
def amazon_slice():
    """The first 400 interactions of the shared Amazon Instruments data with a leave-last-out split."""
    if not AMAZON.is_dir():
        pytest.skip(f"{AMAZON} absent (shared evaluation data is not part of the repo)")
    from interestlake.datasets.public import load_dataset

    interactions = P.interactions_from_events(load_dataset("amazon-reviews", AMAZON).events)
    counts = interactions[C.COL_USER_ID].value_counts()
    # Users with at least 5 interactions, until about 400 interactions.
    chosen = counts[counts >= 5].index[:70]
    return P.make_split("leave-last-out", interactions[interactions[C.COL_USER_ID].isin(chosen)].head(400))


def fitted(name, split, **changes):
    catalog = B.Catalog.of(split.train)
    params = {**TINY[name], **changes}
    model = R.builder(name, 42, 2)(params, catalog).fit(catalog.matrix(split.train, ordered=True))
    return model, catalog


@pytest.mark.parametrize("name", PEER_PARAMS)
def test_peer_lists_on_real_data_exclude_history_and_hold_k_distinct_catalog_items(name, amazon_slice):
    split = amazon_slice
    # Lists only: the fewest epochs the model takes.
    model, catalog = fitted(name, split, **{key: 1 for key in ("n_epochs", "iterations") if key in TINY[name]})
    users = split.test_users
    history = catalog.matrix(split.train, users, ordered=True)
    recs = B.recommend(model, catalog, history, users, 10)
    assert set(recs[C.COL_USER_ID]) == set(users)
    per_user = recs.groupby(C.COL_USER_ID)[C.COL_ITEM_ID]
    # K distinct catalog items per user (every user has far more than K unseen items).
    assert (per_user.nunique() == 10).all() and (per_user.size() == 10).all()
    assert recs[C.COL_ITEM_ID].isin(catalog.items).all()
    seen = set(zip(split.train[C.COL_USER_ID], split.train[C.COL_ITEM_ID]))
    assert not any(pair in seen for pair in zip(recs[C.COL_USER_ID], recs[C.COL_ITEM_ID]))


@pytest.mark.parametrize("name", PEER_PARAMS)
def test_peer_beats_random_on_two_taste_groups(name):
    split = two_taste_split()
    model, catalog = fitted(name, split)
    users = split.test_users
    recs = B.recommend(model, catalog, catalog.matrix(split.train, users, ordered=True), users, 5)
    held = dict(zip(split.test[C.COL_USER_ID], split.test[C.COL_ITEM_ID]))
    hits = np.mean([held[user] in set(items) for user, items in recs.groupby(C.COL_USER_ID)[C.COL_ITEM_ID]])
    # Random: 5 of the 13 unseen items, hit rate 0.38; a model that knows a user's group
    # ranks that group's 3 unseen items first and always hits.
    assert hits > 0.7, f"{name} hit rate {hits:.2f}"


def test_peer_scores_match_each_librarys_own_scores():
    """Our fold-in of a history reproduces what the library itself scores for its trained users."""
    pytest.importorskip("implicit", reason="implicit not installed (pip install -e '.[peers]')")
    pytest.importorskip("cornac", reason="cornac not installed (pip install -e '.[peers]')")
    split = two_taste_split()
    for name in ("implicit_als", "ease", "bivae"):
        model, catalog = fitted(name, split)
        train = catalog.matrix(split.train, ordered=True)
        ours = model.score(train)
        if name == "implicit_als":
            ids, _ = model.model.recommend(np.arange(5), R._binary(train[:5]), N=10, recalculate_user=True)
            np.testing.assert_array_equal(ids, B.top_k(ours[:5], train[:5], 10))
        else:
            theirs = np.stack([np.asarray(model.model.score(row)).ravel() for row in range(train.shape[0])])
            np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-6)


def test_bpr_has_no_fold_in_and_says_so_for_unknown_users():
    pytest.importorskip("implicit", reason="implicit not installed (pip install -e '.[peers]')")
    split = two_taste_split()
    model, catalog = fitted("implicit_bpr", split)
    assert not model.folds_in
    with pytest.raises(ValueError, match="only users it was trained on"):
        model.score(catalog.matrix(split.train, ["u000"]), ["stranger"])


def test_ordered_matrix_holds_positions_by_time():
    train = pd.DataFrame({
        C.COL_USER_ID: ["a", "a", "a", "b"],
        C.COL_ITEM_ID: ["x", "y", "z", "x"],
        C.COL_TS: pd.to_datetime([3, 1, 1, 5], unit="s", utc=True),
    })
    catalog = B.Catalog.of(train)
    matrix = catalog.matrix(train, ordered=True)
    # a: y and z at t=1 (input order), then x; b: x.
    assert matrix.toarray().tolist() == [[3.0, 1.0, 2.0], [1.0, 0.0, 0.0]]
    assert R._sequences(matrix) == [[1, 2, 0], [0]]
    assert (catalog.matrix(train).toarray() == (matrix.toarray() > 0)).all()


def test_grid_points_are_every_combination():
    assert R.grid_points({"a": [1, 2], "b": ["x"], "c": [[16], [32]]}) == [
        {"a": 1, "b": "x", "c": [16]}, {"a": 1, "b": "x", "c": [32]},
        {"a": 2, "b": "x", "c": [16]}, {"a": 2, "b": "x", "c": [32]},
    ]
