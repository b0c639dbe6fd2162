"""Interest formulas and block scoring, with numpy only."""

import numpy as np
import pytest

from interestlake.models.interest import InterestParams, normalize, user_interest
from interestlake.models.reasons import FALLBACK_REASON, explain
from interestlake.models.scoring import TopKPool

WEIGHTS = {"view": 1.0, "click": 2.0, "cart": 3.0, "purchase": 5.0, "rate": 3.0, "search": 2.0, "review": 4.0}
PARAMS = InterestParams(
    half_life_days=10.0, event_weights=WEIGHTS, short_term_events=2, attention_temperature=0.1, long_term_weight=0.5
)
DAY = 86_400.0
E = np.eye(4, dtype=np.float32)


def test_long_term_is_decayed_weighted_mean():
    vectors = np.stack([E[0], E[1]])
    # Same type; the first is one half-life older, so it weighs half as much.
    result = user_interest(vectors, ["view", "view"], np.array([0.0, 10 * DAY]), PARAMS)
    np.testing.assert_allclose(result.long_term, normalize(0.5 * E[0] + 1.0 * E[1]), atol=1e-6)


def test_event_type_weights_and_order_independence():
    vectors = np.stack([E[0], E[1]])
    seconds = np.array([5 * DAY, 5 * DAY])
    result = user_interest(vectors, ["view", "purchase"], seconds, PARAMS)
    np.testing.assert_allclose(result.long_term, normalize(1 * E[0] + 5 * E[1]), atol=1e-6)
    shuffled = user_interest(vectors[::-1], ["purchase", "view"], seconds, PARAMS)
    np.testing.assert_allclose(shuffled.long_term, result.long_term, atol=1e-6)


def test_long_term_does_not_depend_on_reference_time():
    vectors = np.stack([E[0], E[1], E[2]])
    kinds = ["view", "cart", "click"]
    seconds = np.array([0.0, 3 * DAY, 7 * DAY])
    a = user_interest(vectors, kinds, seconds, PARAMS).long_term
    b = user_interest(vectors, kinds, seconds + 400 * DAY, PARAMS).long_term
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_short_term_reads_only_the_last_events_and_attends_to_the_session():
    vectors = np.stack([E[3], E[0], normalize(E[0] + 0.2 * E[1])])
    result = user_interest(vectors, ["view"] * 3, np.array([0.0, 1.0, 2.0]), PARAMS)
    # The oldest event (E[3]) is outside the last 2.
    assert abs(result.short_term[3]) < 1e-6
    assert result.short_term[0] > 0.9
    assert np.isclose(np.linalg.norm(result.interest), 1.0)


def test_attention_matrix_changes_the_short_term_vector():
    vectors = np.stack([E[0], E[1]])
    identity = user_interest(vectors, ["view", "view"], np.array([0.0, 1.0]), PARAMS).short_term
    learned = np.diag([10.0, 0.1, 1.0, 1.0])
    steered = user_interest(vectors, ["view", "view"], np.array([0.0, 1.0]), PARAMS, attention=learned).short_term
    assert steered[0] > identity[0] and steered[1] < identity[1]


def test_empty_history_is_an_error():
    with pytest.raises(ValueError, match="non-empty"):
        user_interest(np.zeros((0, 4)), [], np.zeros(0), PARAMS)
    with pytest.raises(ValueError, match="lengths differ"):
        user_interest(np.stack([E[0]]), ["view", "view"], np.zeros(1), PARAMS)


def top_k(users, items, k, excluded, blocks=1, order=None):
    """The pool's lists of ``users`` over ``items`` split into ``blocks`` (taken in ``order``), exclusions masked."""
    users, items = np.asarray(users, np.float32), np.asarray(items, np.float32)
    pool = TopKPool(len(users), k)
    chunks = np.array_split(np.arange(len(items)), blocks)
    for chunk in (chunks if order is None else [chunks[i] for i in order]):
        scores = users @ items[chunk].T
        for row, cols in enumerate(excluded):
            scores[row, [c for c, n in enumerate(chunk) if n in cols]] = -np.inf
        # Keys and id ranks are the item numbers (ids "i0".."iN" compare like numbers here only by rank).
        pool.add(chunk, chunk, scores)
    return [([int(key) for key in keys], scores.tolist()) for keys, scores in pool.results()]


def test_top_k_excludes_and_orders():
    users = np.stack([E[0], E[1]])
    items = np.stack([E[0], normalize(E[0] + E[1]), E[1], E[2]])
    (idx0, s0), (idx1, s1) = top_k(users, items, 2, excluded=[[0], []])
    # Item 0 is excluded; items 2 and 3 tie at 0 and the smaller id wins.
    assert idx0 == [1, 2]
    assert idx1 == [2, 1]
    assert s1[0] >= s1[1]


def test_top_k_with_fewer_eligible_items_than_k():
    users = np.stack([E[0]])
    items = np.stack([E[0], E[1]])
    [(idx, scores)] = top_k(users, items, 5, excluded=[[0]])
    assert idx == [1] and np.isfinite(scores).all()


def test_top_k_ties_break_by_item_id():
    users = np.stack([E[0]])
    items = np.stack([E[1], E[2], E[3]])
    [(idx, _)] = top_k(users, items, 2, excluded=[[]])
    assert idx == [0, 1]


def test_top_k_is_the_same_whatever_the_item_blocks():
    rng = np.random.default_rng(3)
    users = np.stack([normalize(v) for v in rng.standard_normal((7, 4))])
    items = np.stack([normalize(v) for v in rng.standard_normal((50, 4))])
    items[10] = items[20]  # an exact tie across blocks
    excluded = [[n, n + 1] for n in range(7)]
    one_block = top_k(users, items, 5, excluded)
    assert top_k(users, items, 5, excluded, blocks=7) == one_block
    assert top_k(users, items, 5, excluded, blocks=7, order=[6, 2, 4, 0, 1, 5, 3]) == one_block
    brute = users.astype(np.float32) @ items.astype(np.float32).T
    for row, (idx, scores) in enumerate(one_block):
        allowed = [n for n in range(50) if n not in excluded[row]]
        expected = sorted(allowed, key=lambda n: (-brute[row, n], n))[:5]
        assert idx == expected


def test_top_k_over_large_blocks_with_many_ties_equals_sorting():
    """Blocks far wider than the pool, as the stage's are: after the first block only items at or
    above a row's worst pooled score are merged; ties (coarse scores) still go to the lower id."""
    rng = np.random.default_rng(8)
    scores = rng.integers(0, 40, size=(9, 3000)).astype(np.float32)  # many ties at every score
    scores[2, :] = 7.0  # one row where every item ties
    scores[4, ::3] = -np.inf  # excluded items
    scores[5, 100:] = -np.inf  # fewer eligible items in later blocks than the pool holds
    ranks = rng.permutation(3000)  # id order differs from key order
    for depth in (1, 10, 40):
        pool = TopKPool(len(scores), depth)
        for start in range(0, 3000, 1000):
            pool.add(np.arange(start, start + 1000), ranks[start:start + 1000], scores[:, start:start + 1000].copy())
        for row, (keys, got) in enumerate(pool.results()):
            eligible = [n for n in range(3000) if np.isfinite(scores[row, n])]
            expected = sorted(eligible, key=lambda n: (-scores[row, n], ranks[n]))[:depth]
            assert keys.tolist() == expected and got.tolist() == scores[row, expected].tolist()


def test_top_k_first_block_floor_never_drops_a_best_item():
    """The first block of a wide scan passes only items at or above a sampled floor (the depth-th
    best of every step-th column): whatever the scores (best items off the sampled columns, all
    on them, the sample tied at the top, excluded cells, rows with fewer eligible items), the
    pools equal a full sort."""
    rng = np.random.default_rng(21)
    for trial in range(40):
        rows, width, depth = int(rng.integers(1, 30)), int(rng.integers(50, 3000)), int(rng.integers(1, 45))
        levels = int(rng.choice([3, 50, 100000]))  # few levels: ties everywhere; many: almost none
        scores = rng.integers(0, levels, size=(rows, width)).astype(np.float32)
        cut = sorted(rng.choice(np.arange(1, width), size=int(rng.integers(0, 3)), replace=False).tolist())
        step = max(2, int(np.sqrt((cut[0] if cut else width) / depth)))  # the first block's sample step
        scores[0, ::step] = -5.0  # the sampled columns hold the row's worst: its best are all elsewhere
        if rows > 1:
            # The sampled columns hold the row's best, all distinct: its best depth are the sample's best
            # depth, and a floor any higher than the sample's depth-th would drop some of them.
            scores[1, ::step] = levels + np.arange(len(scores[1, ::step]))
        if rows > 4:
            scores[4, ::step] = levels  # the sample tied at the top: the floor is the maximum
        if rows > 2:
            scores[2, rng.random(width) < 0.9] = -np.inf  # mostly excluded
        if rows > 3:
            scores[3, depth // 2:] = -np.inf  # fewer eligible items than the pool holds
        ranks = rng.permutation(width)
        pool = TopKPool(rows, depth)
        for start, stop in zip([0] + cut, cut + [width]):
            pool.add(np.arange(start, stop), ranks[start:stop], scores[:, start:stop].copy())
        for row, (keys, got) in enumerate(pool.results()):
            eligible = [n for n in range(width) if np.isfinite(scores[row, n])]
            expected = sorted(eligible, key=lambda n: (-scores[row, n], ranks[n]))[:depth]
            assert keys.tolist() == expected, (trial, row)
            assert got.tolist() == scores[row, expected].tolist()


def test_ties_at_the_pool_boundary_go_to_the_lower_id():
    """Many items tied at the k-th score: the pool keeps the ones first in id order, in any block split."""
    users = np.stack([E[0]])
    items = np.stack([E[0]] + [E[1]] * 9)  # one best, then nine ties at 0
    for blocks in (1, 2, 5):
        for order in (None, list(range(blocks))[::-1]):
            [(idx, _)] = top_k(users, items, 4, [[]], blocks=blocks, order=order)
            assert idx == [0, 1, 2, 3]


def reason(item_id, vector, history, kinds, labels, items, price=1.0, text="", need=None):
    return explain(item_id, vector, text, price, need, history, kinds, labels, items, {}, [])


def test_reason_names_the_closest_history_entry():
    history = np.stack([E[0], E[1]])
    items = ["tent-1", None]
    # A past search is never evidence, even the closest entry: only a fresh need that placed the item is
    # (see the steering tests). The item is near the search (cosine 0.89) and near enough the tent (0.45).
    near_both = (E[0] + 2 * E[1]) / np.sqrt(5)
    assert reason("x", near_both, history, ["view", "search"], ["Tent", "lightweight tent"], items) == (
        'Similar to "Tent", which you viewed'
    )
    # An item far from every entry (orthogonal to the tent) is not called similar to it.
    assert reason("x", E[1], history, ["view", "search"], ["Tent", "lightweight tent"], items) == FALLBACK_REASON
    assert reason("x", E[0], history, ["purchase", "search"], ["Tent", "q"], items) == (
        'Goes with "Tent", which you bought'
    )
    assert reason("x", E[0], np.zeros((0, 4)), [], [], []) == FALLBACK_REASON
    long_label = "A" * 200
    assert len(reason("x", E[0], history[:1], ["view"], [long_label], ["a"])) < 120


def test_reason_for_an_item_already_in_the_history():
    history = np.stack([E[1], E[0]])
    kinds, labels, items = ["search", "cart"], ["tent", "Tent"], [None, "tent-1"]
    assert reason("tent-1", E[0], history, kinds, labels, items) == "Still in your cart"


def test_folding_new_entries_equals_recomputing_the_whole_history():
    from interestlake.models.interest import decayed_stats, fold

    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(40, 8))
    kinds = list(rng.choice(list(WEIGHTS), size=40))
    seconds = np.sort(rng.uniform(0, 90 * DAY, size=40))
    # Late arrivals too: the second batch holds entries older than the first batch's newest.
    seconds[25:30] = seconds[5:10]
    full = decayed_stats(vectors, kinds, seconds, PARAMS)
    folded = fold(
        decayed_stats(vectors[:25], kinds[:25], seconds[:25], PARAMS),
        decayed_stats(vectors[25:], kinds[25:], seconds[25:], PARAMS),
        PARAMS.half_life_days,
    )
    np.testing.assert_allclose(folded.weighted_sum, full.weighted_sum, rtol=1e-9)
    assert np.isclose(folded.mass, full.mass) and folded.ref_seconds == full.ref_seconds
    assert fold(None, full, 10.0) is full and fold(full, None, 10.0) is full


def test_folding_one_entry_is_the_seed_update_rule():
    from interestlake.models.interest import decayed_stats, fold

    old = decayed_stats(np.stack([E[0], E[1]]), ["view", "cart"], np.array([0.0, 2 * DAY]), PARAMS)
    new = decayed_stats(np.stack([E[2]]), ["purchase"], np.array([12 * DAY]), PARAMS)
    folded = fold(old, new, PARAMS.half_life_days)
    u = old.weighted_sum / old.mass
    decay = 2.0 ** (-10 / PARAMS.half_life_days)
    alpha = 5.0 / (old.mass * decay + 5.0)
    np.testing.assert_allclose(folded.weighted_sum / folded.mass, (1 - alpha) * u + alpha * E[2], atol=1e-12)


def test_approximate_search_finds_nearly_all_exact_neighbours():
    pytest.importorskip("faiss", reason="faiss-cpu is not installed (pip install faiss-cpu)")
    from interestlake.models.scoring import ApproximateTopK

    rng = np.random.default_rng(5)
    items = np.stack([normalize(v) for v in rng.standard_normal((2000, 16))])
    users = np.stack([normalize(v) for v in rng.standard_normal((50, 16))])
    _, found = ApproximateTopK(items).search(users, 10)
    exact = top_k(users, items, 10, [[] for _ in users])
    hits = sum(len(set(row.tolist()) & set(idx)) for row, (idx, _) in zip(found, exact))
    assert hits / (10 * len(users)) >= 0.95


def test_scoring_runs_on_the_cpu_where_there_is_no_gpu():
    import os

    from interestlake.models.scoring import block_scores, scoring_device

    assert scoring_device("cpu") == "cpu"
    if not os.path.exists("/dev/nvidiactl"):
        assert scoring_device("auto") == "cpu"
    users, items = np.eye(3, dtype=np.float32), np.arange(6, dtype=np.float32).reshape(2, 3)
    assert np.array_equal(block_scores(users, items, "cpu"), items.T)


def write_item_matrix(folder, items):
    """An item matrix as the recommend stage stages it: ids i00.., vectors, no prices, no model."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from interestlake import constants as C
    from interestlake.pipeline.scorer import ITEM_MATRIX_ARROW_SCHEMA, SCORE_VECTOR

    n = len(items)
    # Written in shuffled order: keys are matrix positions, ties and lists follow item ids.
    order = np.random.default_rng(1).permutation(n)
    pq.write_table(pa.table({C.COL_ITEM_ID: [f"i{k:02d}" for k in order], C.COL_EMBEDDING: list(items[order]),
                             C.COL_PRICE: [None] * n, C.COL_TEXT: [""] * n, SCORE_VECTOR: [None] * n},
                            schema=ITEM_MATRIX_ARROW_SCHEMA), folder / "items.parquet")


def user_batch(users, excluded):
    import pyarrow as pa

    from interestlake import constants as C

    nothing = pa.nulls(len(users), pa.list_(pa.string()))
    return pa.RecordBatch.from_pydict({
        C.COL_USER_ID: [f"u{n}" for n in range(len(users))], "interest": list(users), "excluded": excluded,
        "hist_kind": nothing, "hist_item": nothing, "hist_label": nothing,
        "hist_ts": pa.nulls(len(users), pa.list_(pa.timestamp("us"))),
        "hist_vec": pa.nulls(len(users), pa.list_(pa.list_(pa.float32()))),
        "hist_shipped": pa.nulls(len(users), pa.list_(pa.int32())),
    })


def scorer_settings(tmp_path, **recommend):
    from tests.conftest import make_settings

    settings = make_settings(tmp_path / "lake")
    return settings.model_copy(update={"recommend": settings.recommend.model_copy(update={"device": "cpu", **recommend})})


def test_kept_and_streamed_item_matrices_give_the_same_lists(tmp_path):
    import pyarrow as pa

    from interestlake import constants as C
    from interestlake.pipeline import scorer

    rng = np.random.default_rng(3)
    items = rng.standard_normal((50, 8)).astype(np.float32)
    write_item_matrix(tmp_path, items)
    users = rng.standard_normal((7, 8)).astype(np.float32)
    batch = user_batch(users, [["i00"]] * 7)

    def ranked(cache_mb):
        settings = scorer_settings(tmp_path, k=5, user_block_size=3, item_block_size=16, item_cache_mb=cache_mb)
        run = scorer._score_partition(str(tmp_path), settings, None, False)
        return pa.Table.from_batches(list(run(iter([batch])))).to_pydict()

    kept = ranked(cache_mb=64)
    [held] = scorer._MATRIX_CACHE.values()
    assert held.embeddings is not None  # read once, kept by this worker
    scorer._MATRIX_CACHE.clear()  # another worker, with a smaller cap
    streamed = ranked(cache_mb=0)
    [held] = scorer._MATRIX_CACHE.values()
    assert held.embeddings is None  # over the cap: streamed per user block
    assert kept == streamed and len(kept[C.COL_ITEM_ID]) == 7 * 5 and "i00" not in kept[C.COL_ITEM_ID]
    for u in range(7):
        best = np.argsort(-(users[u] @ items.T)[1:], kind="stable")[:5] + 1
        assert kept[C.COL_ITEM_ID][5 * u:5 * u + 5] == [f"i{n:02d}" for n in best]
        assert kept[C.COL_SCORE][5 * u:5 * u + 5] == pytest.approx((users[u] @ items.T)[best].tolist(), abs=1e-5)


def test_approximate_retrieval_honours_exclusions(tmp_path):
    pytest.importorskip("faiss", reason="faiss-cpu is not installed (pip install faiss-cpu)")
    import pyarrow as pa

    from interestlake import constants as C
    from interestlake.pipeline import scorer

    rng = np.random.default_rng(5)
    items = np.stack([normalize(v) for v in rng.standard_normal((99, 16))]).astype(np.float32)
    write_item_matrix(tmp_path, items)
    users = np.stack([normalize(v) for v in rng.standard_normal((20, 16))]).astype(np.float32)
    excluded = [[f"i{int(np.argmax(items @ u)):02d}"] for u in users]  # each user's best item is off limits
    run = scorer._score_partition(str(tmp_path), scorer_settings(tmp_path, k=10), None, True)
    got = pa.Table.from_batches(list(run(iter([user_batch(users, excluded)])))).to_pydict()
    exact = top_k(users, items, 10, [[int(e[0][1:])] for e in excluded])
    hits = 0
    for u, (idx, _) in enumerate(exact):
        listed = got[C.COL_ITEM_ID][10 * u:10 * u + 10]
        assert len(listed) == 10 and excluded[u][0] not in listed
        hits += len(set(listed) & {f"i{n:02d}" for n in idx})
    assert hits / (10 * len(users)) >= 0.95


def test_the_cycle_collector_sleeps_through_each_user_block_and_wakes_after(tmp_path):
    import gc

    import pyarrow as pa

    from interestlake.pipeline import scorer

    rng = np.random.default_rng(5)
    write_item_matrix(tmp_path, rng.standard_normal((60, 8)).astype(np.float32))
    users = 3_000
    batch = user_batch(rng.standard_normal((users, 8)).astype(np.float32), [["i00", "i01"]] * users)
    settings = scorer_settings(tmp_path, k=5, user_block_size=1_000, item_block_size=32)
    run = scorer._score_partition(str(tmp_path), settings, None, False)
    list(run(iter([batch.slice(0, 10)])))  # the matrix read and imports done before counting
    collections = []

    def count(phase, info):
        if phase == "start":
            collections.append(info["generation"])

    gc.callbacks.append(count)
    try:
        blocks = [gc.isenabled()] + [gc.isenabled() for _ in run(iter([batch]))]
    finally:
        gc.callbacks.remove(count)
    assert gc.isenabled() and all(blocks)  # on again whenever a block is handed over
    assert sum(pa.Table.from_batches([b]).num_rows for b in run(iter([batch]))) == users * 5
    # Scoring 3,000 users allocates far more than the 700 objects that start a collection;
    # paused per block, only what happens between the three blocks can start one.
    assert len(collections) <= 6, collections

    gc.disable()  # a caller that paused it itself gets it back paused, error or not
    try:
        with pytest.raises(ValueError):
            with scorer._cyclic_gc_paused():
                raise ValueError("scoring failed")
        assert not gc.isenabled()
    finally:
        gc.enable()
    with pytest.raises(ValueError):
        with scorer._cyclic_gc_paused():
            assert not gc.isenabled()
            raise ValueError("scoring failed")
    assert gc.isenabled()


def test_scoring_tasks_one_per_slot_until_users_are_many():
    from interestlake.pipeline.recommend import scoring_tasks

    assert scoring_tasks(20_000, 2) == 2
    assert scoring_tasks(1, 8) == 1
    assert scoring_tasks(1_000_000, 2) == 5


def test_only_shipped_history_vectors_travel_with_their_positions():
    """hist_vec keeps the vectors the scorers cannot look up, hist_shipped their entries; null lists stay null."""
    import pyarrow as pa

    from interestlake.pipeline.gather import sparse_lists

    vector = pa.list_(pa.float32())
    aligned = pa.array([[None, [1.0, 2.0], None, [3.0, 4.0]], None, [], [None], [[5.0, 6.0]]], pa.list_(vector))
    for sliced, expected_vectors, expected_positions in [
        (aligned, [[[1.0, 2.0], [3.0, 4.0]], None, [], [], [[5.0, 6.0]]], [[1, 3], None, [], [], [0]]),
        (aligned.slice(3), [[], [[5.0, 6.0]]], [[], [0]]),
    ]:
        vectors, positions = sparse_lists(sliced)
        assert vectors.to_pylist() == expected_vectors
        assert positions.to_pylist() == expected_positions


def test_scorer_takes_listed_entries_from_the_matrix_and_shipped_ones_as_shipped(tmp_path):
    """Per entry: its shipped vector, else its item's matrix vector, else zeros (an unknown item), user after user."""
    import pyarrow as pa

    from interestlake.pipeline.scorer import ItemMatrix, _history_vectors

    items = np.eye(4, dtype=np.float32)
    write_item_matrix(tmp_path, items)
    matrix = ItemMatrix(str(tmp_path), block_size=2, cache_mb=64)
    text = np.full(4, 0.5, np.float32)
    batch = pa.RecordBatch.from_pydict({
        "hist_item": [["i01", None, "i03"], None, ["gone", "i02"]],
        "hist_vec": pa.array([[text.tolist()], None, []], pa.list_(pa.list_(pa.float32()))),
        "hist_shipped": pa.array([[1], None, []], pa.list_(pa.int32())),
    })
    history, rows, lengths = _history_vectors(batch, matrix)
    assert lengths.tolist() == [3, 0, 2] and rows is None
    assert np.array_equal(history, np.stack([items[1], text, items[3], np.zeros(4, np.float32), items[2]]))
    # A block of listed entries only: the matrix's own vectors and each entry's key, no copy.
    listed = pa.RecordBatch.from_pydict({"hist_item": [["i00", "i02"]],
                                         "hist_vec": pa.array([[]], pa.list_(pa.list_(pa.float32()))),
                                         "hist_shipped": pa.array([[]], pa.list_(pa.int32()))})
    history, rows, _ = _history_vectors(listed, matrix)
    assert history is matrix.embeddings and np.array_equal(history[rows], items[[0, 2]])
    # Streamed from storage (vectors not held): the entries' vectors gathered, the same ones.
    streamed = ItemMatrix(str(tmp_path), block_size=2, cache_mb=0)
    history, rows, _ = _history_vectors(listed, streamed)
    assert rows is None and np.array_equal(history, items[[0, 2]])
    # Sliced batches count their offsets from their own start.
    history, rows, lengths = _history_vectors(batch.slice(1), matrix)
    assert lengths.tolist() == [0, 2] and np.array_equal(history, np.stack([np.zeros(4, np.float32), items[2]]))


def test_a_block_of_plain_and_re_ranked_users_gives_each_the_list_it_gets_in_its_own_kind_of_block(tmp_path, monkeypatch):
    """A block mixing users nothing re-ranks with users a fresh need re-ranks is retrieved as two
    sub-blocks (K-deep pools for the first, pool_factor x K for the second): under a learned model,
    each user without a need gets the brute-force top K of the model's score, every user the list
    they get in a block of their own kind only, and the list of the whole block retrieved at
    pool_factor x K (the way before the split)."""
    import pyarrow as pa

    from interestlake import constants as C
    from interestlake.benchmarks import score as bench
    from interestlake.benchmarks.cuda import _Held
    from interestlake.pipeline import scorer
    from interestlake.pipeline.scorer import score_users

    seed, dim, k, users = 5, 16, 5, 30
    settings = scorer_settings(tmp_path, k=k, user_block_size=64, item_block_size=64)
    history = settings.interests.short_term_events
    item_ids, item_matrix = bench.catalog(users, 2000, dim, seed)  # ~60 items within the need's $20
    model = bench.random_model(item_ids, item_matrix, settings, seed)
    uris = bench.write_items(tmp_path, item_ids, item_matrix, model, seed)
    table = pa.Table.from_pylist([bench.user_row(n, seed, dim, history, item_ids, item_matrix, model) for n in range(users)],
                                 schema=bench.user_schema(model))
    side = table.drop_columns(["interest"]).rename_columns(
        ["interest" if name == "learned_interest" else name for name in table.schema.names if name != "interest"])

    def lists(rows: pa.Table) -> dict[str, list[str]]:
        ranked = score_users(rows, uris["learned_items"], settings, model=_Held(model)).to_pydict()
        out: dict[str, list[str]] = {}
        for user, item in zip(ranked[C.COL_USER_ID], ranked[C.COL_ITEM_ID]):
            out.setdefault(user, []).append(item)
        return out

    needs = [n for n in range(users) if n % bench.NEED_EVERY == 0]
    mixed = lists(side)
    alone = {**lists(side.take([n for n in range(users) if n not in needs])), **lists(side.take(needs))}
    assert mixed == alone and len(mixed) == users and all(len(set(items)) == k for items in mixed.values())
    exact = bench.expected_lists([n for n in range(users) if n not in needs], "learned", seed, dim, history,
                                 item_ids, item_matrix, model, k)
    assert {user: mixed[user] for user in exact} == exact
    with monkeypatch.context() as patch:
        patch.setattr(scorer, "_pools", lambda queries, matrix, model, k, depth, device, index:
                      scorer._retrieve(queries, matrix, model, depth, device, index))
        assert lists(side) == mixed
    # The need users' lists are re-ranked (the search takes their first slots), not the top K.
    assert any(mixed[f"user-{n:07d}"] != bench.expected_lists([n], "learned", seed, dim, history, item_ids, item_matrix,
                                                               model, k)[f"user-{n:07d}"] for n in needs)
