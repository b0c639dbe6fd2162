"""Interest formulas and block scoring, with numpy only."""

import numpy as np
import pytest

from interestlake.models.interest import InterestParams, normalize, user_interest
from interestlake.models.scoring import FALLBACK_REASON, RunningTopK, reason_for

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


def top_k(users, items, k, excluded, blocks=1):
    ids = [f"i{n}" for n in range(len(items))]
    ranking = RunningTopK(users, k, [{f"i{n}" for n in cols} for cols in excluded])
    for chunk in np.array_split(np.arange(len(items)), blocks):
        ranking.add([ids[n] for n in chunk], items[chunk])
    return [([int(item[1:]) for item, _, _ in best], [score for _, score, _ in best]) for best in ranking.results()]


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
    brute = users.astype(np.float32) @ items.astype(np.float32).T
    for row, (idx, scores) in enumerate(one_block):
        allowed = [n for n in range(50) if n not in excluded[row]]
        expected = sorted(allowed, key=lambda n: (-brute[row, n], f"i{n}"))[:5]
        assert idx == expected


def test_reason_names_the_closest_history_entry():
    history = np.stack([E[0], E[1]])
    items = ["tent-1", None]
    assert reason_for("x", E[1], history, ["view", "search"], ["Tent", "lightweight tent"], items) == (
        'Matches your search "lightweight tent"'
    )
    assert reason_for("x", E[0], history, ["purchase", "search"], ["Tent", "q"], items) == (
        'Goes with "Tent", which you bought'
    )
    assert reason_for("x", E[0], np.zeros((0, 4)), [], [], []) == FALLBACK_REASON
    long_label = "A" * 200
    assert len(reason_for("x", E[0], history[:1], ["view"], [long_label], ["a"])) < 120


def test_reason_for_an_item_already_in_the_history():
    history = np.stack([E[1], E[0]])
    kinds, labels, items = ["search", "cart"], ["tent", "Tent"], [None, "tent-1"]
    assert reason_for("tent-1", E[0], history, kinds, labels, items) == "Still in your cart"


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


def test_approximate_top_k_finds_nearly_all_exact_neighbours_and_honours_exclusions():
    pytest.importorskip("faiss", reason="faiss-cpu is not installed (pip install faiss-cpu)")
    from interestlake.models.scoring import ApproximateTopK

    rng = np.random.default_rng(5)
    items = np.stack([normalize(v) for v in rng.standard_normal((2000, 16))])
    users = np.stack([normalize(v) for v in rng.standard_normal((50, 16))])
    ids = [f"i{n:05d}" for n in range(len(items))]
    excluded = [{ids[int(np.argmax(items @ u))]} for u in users]  # each user's best item is off limits
    approximate = ApproximateTopK(ids, items).search(users, 10, excluded)
    exact = top_k(users, items, 10, [[int(next(iter(e))[1:])] for e in excluded])
    hits = sum(len({item for item, _, _ in got} & {f"i{n:05d}" for n in idx}) for got, (idx, _) in zip(approximate, exact))
    assert hits / (10 * len(users)) >= 0.95
    assert all(len(got) == 10 and not ({item for item, _, _ in got} & skip) for got, skip in zip(approximate, excluded))


def test_scoring_runs_on_the_cpu_where_there_is_no_gpu():
    import os

    from interestlake.models.scoring import block_scores, scoring_device

    assert scoring_device("cpu") == "cpu"
    if not os.path.exists("/dev/nvidiactl"):
        assert scoring_device("auto") == "cpu"
    users, items = np.eye(3, dtype=np.float32), np.arange(6, dtype=np.float32).reshape(2, 3)
    assert np.array_equal(block_scores(users, items, "cpu"), items.T)


def test_kept_and_streamed_item_matrices_give_the_same_lists(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from interestlake import constants as C
    from interestlake.pipeline import recommend

    rng = np.random.default_rng(3)
    items = rng.standard_normal((50, 8)).astype(np.float32)
    pq.write_table(pa.table({C.COL_ITEM_ID: [f"i{n:02d}" for n in range(50)], C.COL_EMBEDDING: list(items)}),
                   tmp_path / "items.parquet")
    users = rng.standard_normal((7, 8)).astype(np.float32)
    nothing = pa.nulls(7, pa.list_(pa.string()))
    batch = pa.RecordBatch.from_pydict({
        C.COL_USER_ID: [f"u{n}" for n in range(7)], "interest": list(users), "excluded": [["i00"]] * 7,
        "hist_kind": nothing, "hist_item": nothing, "hist_label": nothing,
        "hist_vec": pa.nulls(7, pa.list_(pa.list_(pa.float32()))),
    })

    def ranked(cache_mb):
        run = recommend._score_partition(str(tmp_path), 5, 3, 16, "cpu", False, cache_mb)
        return pa.Table.from_batches(list(run(iter([batch])))).to_pydict()

    kept = ranked(cache_mb=64)
    assert recommend._ITEM_CACHE[(str(tmp_path), "exact", False)] is not None  # read once, kept by this worker
    recommend._ITEM_CACHE.clear()  # another worker, with a smaller cap
    streamed = ranked(cache_mb=0)
    assert recommend._ITEM_CACHE[(str(tmp_path), "exact", False)] is None  # over the cap: streamed per user block
    assert kept == streamed and len(kept[C.COL_ITEM_ID]) == 7 * 5 and "i00" not in kept[C.COL_ITEM_ID]
    best = np.argsort(-(users[0] @ items.T)[1:])[:5] + 1
    assert kept[C.COL_ITEM_ID][:5] == [f"i{n:02d}" for n in best]


def test_scoring_tasks_one_per_slot_until_users_are_many():
    from interestlake.pipeline.recommend import scoring_tasks

    assert scoring_tasks(20_000, 2) == 2
    assert scoring_tasks(1, 8) == 1
    assert scoring_tasks(1_000_000, 2) == 5
