"""What users write steers their lists: query parsing, topics, clusters, the steered top K, reasons (no Spark)."""

import numpy as np
import pytest

from interestlake.models.diversity import intra_list_similarity
from interestlake.models.feedback import DislikeRule, is_negative_text
from interestlake.models.multi_interest import cluster_interests
from interestlake.models.needs import parse_need
from interestlake.models.reasons import explain
from interestlake.models.steering import InterestRelevance, NeedQuery, assemble, need_slots
from interestlake.models.topics import key_phrases, user_topics
from interestlake.settings import SteerSettings


@pytest.mark.parametrize(
    "text, low, high, cheap, terms, excluded",
    [
        ("acoustic guitar strings under $20", None, 20, False, ("acoustic", "guitar", "string"), ()),
        ("gift for a guitarist, not too expensive", None, None, True, ("guitarist",), ()),
        ("a phone under 1000, not Apple", None, 1000, False, ("phone",), ("apple",)),
        ("headphones between 50 and 80 dollars", 50, 80, False, ("headphone",), ()),
        ("mic over $50", 50, None, False, ("mic",), ()),
        ("drum sticks 2k max", None, 2000, False, ("drum", "stick"), ()),
        ("amp around 100", 80, 120, False, ("amp",), ()),
        ("1000元以下的手机", None, 1000, False, ("手机",), ()),
        ("不要苹果，两千元以内的手机", None, 2000, False, ("手机",), ("苹果",)),
        ("耳机 500到1000元", 500, 1000, False, ("耳机",), ()),
        ("小于一千五的吉他", None, 1500, False, ("吉他",), ()),
        ("吉他弦 便宜一点", None, None, True, ("吉他弦",), ()),
    ],
)
def test_queries_parse_into_constraints(text, low, high, cheap, terms, excluded):
    need = parse_need(text)
    assert (need.price_min, need.price_max, need.cheap, need.terms, need.excluded) == (low, high, cheap, terms, excluded)
    assert need.text == text and need.lang == ("zh" if any("\u4e00" <= ch <= "\u9fff" for ch in text) else "en")


def test_need_constraints_on_items():
    need = parse_need("a phone under 1000, not Apple")
    assert need.allows(999.0, "galaxy a54 phone. phones")
    assert not need.allows(1200.0, "galaxy s24 phone")
    assert not need.allows(500.0, "apple iphone se phone")
    assert not need.allows(float("nan"), "galaxy phone")  # a price bound needs a known price
    assert parse_need("不要苹果的手机").allows(5000.0, "小米 手机") and not parse_need("不要苹果").allows(1.0, "苹果 手机")
    assert parse_need("acoustic guitar strings").term_match("martin acoustic guitar strings. strings") == 1.0
    assert parse_need("acoustic guitar strings").term_match("fender guitar picks") == pytest.approx(1 / 3)


@pytest.mark.parametrize("query", ["guitar strings under $20", "bass and bassoon reeds", "hi-fi fi speaker",
                                   "吉他 strings under 300", "guitar guitar strings", "不要Yarrow，236.49元以下的keyboards & pianos",
                                   "glass glasses, not apple"])
def test_needs_check_many_candidates_as_one_by_one(query):
    """term_match's one-pattern search, term_matches over many texts and allows_each give what the per-term, per-item rules give."""
    from interestlake.models.needs import _contains

    texts = ["guitar strings set", "bass guitar", "bassoon reed", "hi-fi speaker fi", "吉他弦 guitar", "strings", "string",
             "guitars and bassoons", "nothing here", "glass glasses", "apple glass", "yarrow keyboards", "pianos",
             "", "strings\nguitar", "吉他"]
    prices = np.array([5.0, 15.0, 20.0, 25.0, 200.0, np.nan, 300.0, 19.99, 1.0, 50.0, 10.0, 100.0, 236.49, 1.0, 2.0, 3.0])
    need = parse_need(query)
    for text in texts:
        expected = sum(_contains(text, term) for term in need.terms) / len(need.terms) if need.terms else 0.0
        assert need.term_match(text) == pytest.approx(expected)
    assert need.term_matches(texts).tolist() == [need.term_match(text) for text in texts]
    assert need.allows_each(prices, texts).tolist() == [need.allows(p, t) for p, t in zip(prices.tolist(), texts)]


def test_negative_feedback_rule():
    rule = DislikeRule(max_rating=2, review_text_max_rating=3)
    assert rule.is_dislike(1) and rule.is_dislike(2, "fine")
    assert rule.is_dislike(3, "Waste of money, the zipper broke") and rule.is_dislike(3, "质量差，退货了")
    assert not rule.is_dislike(3, "does the job") and not rule.is_dislike(5, "terrible jokes, great book")
    assert not rule.is_dislike(None) and not is_negative_text(None)


def test_topics_group_phrases_by_head_word_with_recency():
    day = 86400.0
    texts = [
        (100 * day, "These light gauge strings sound great on my Martin."),
        (99 * day, "acoustic guitar strings under $20"),
        (40 * day, "Nice tent for camping; the tent poles are sturdy."),
    ]
    topics = user_topics(texts, half_life_days=30, max_topics=20)
    by_label = {t.label: t for t in topics}
    strings = next(t for t in topics if "strings" in t.phrases)
    assert strings.mentions == 2 and "guitar strings" in strings.phrases and "light gauge strings" in strings.phrases
    tent = next(t for t in topics if "tent" in t.phrases)
    assert strings.weight > tent.weight * 3  # twice as many texts, and 60 days newer
    assert topics[0] is strings and sum(t.weight for t in topics) <= 1 + 1e-9
    assert by_label and user_topics([], 30, 5) == [] and user_topics([(0.0, "the and of")], 30, 5) == []
    assert key_phrases("吉他弦音色很好，非常适合初学者") == ["吉他弦音色", "初学者"]


# Each part alone: no MMR unless a test asks for it.
PLAIN = SteerSettings(mmr_weight=0.0)


def unit(*rows):
    matrix = np.array(rows, dtype=np.float64)
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def cosine(vectors, *interests):
    """Each (query vector, share) as the cosine relevance of the candidates, as the scorer gives it without a model."""
    return [InterestRelevance(vectors @ query, share) for query, share in interests]


def test_clusters_of_a_two_interest_history_and_dislikes_taking_one_away():
    jazz = unit([1, 0.1, 0], [1, 0, 0.1], [0.9, 0.1, 0.1])
    camping = unit([0, 1, 0.1], [0.1, 1, 0], [0, 0.9, 0.2])
    history = np.vstack([jazz, camping])
    found = cluster_interests(history, np.ones(6), 0.35, 3, 0.2)
    assert len(found) == 2 and sorted(f.members for f in found) == [(0, 1, 2), (3, 4, 5)]
    assert sum(f.share for f in found) == pytest.approx(1.0)
    one = cluster_interests(jazz, np.ones(3), 0.35, 3, 0.2)
    assert len(one) == 1 and one[0].members == (0, 1, 2)
    # A 1-star camping item (weight -3) outweighs the three camping views: jazz alone is left.
    disliked = np.vstack([history, unit([0, 1, 0.05])])
    left = cluster_interests(disliked, np.r_[np.ones(6), -3.0], 0.35, 3, 0.2)
    assert len(left) == 1 and left[0].members == (0, 1, 2)


def catalogue():
    ids = ["c1", "c2", "c3", "j1", "j2", "j3", "s1", "s2", "s3"]
    vectors = unit([0, 1, 0.1], [0.1, 1, 0], [0, 1, 0.3], [1, 0, 0.1], [1, 0.1, 0], [1, 0.2, 0.2],
                   [0.3, 0, 1], [0.2, 0.1, 1], [0.3, 0.1, 1])
    prices = np.array([100, 50, 20, 25, 22, 30, 9.99, 14.99, 45])
    texts = ["tent", "sleeping bag", "headlamp", "jazz vinyl", "jazz lp", "jazz record",
             "acoustic guitar strings", "acoustic guitar strings", "acoustic guitar strings premium"]
    return ids, vectors, prices, texts


def test_what_a_fresh_need_excludes_stays_out_of_the_interests_slots_too():
    ids, vectors, prices, texts = catalogue()
    texts = [*texts[:6], "acoustic guitar strings", "acoustic guitar strings", "larkwood acoustic guitar strings"]
    strings = unit([0.3, 0, 1])[0]
    need = NeedQuery(parse_need("acoustic guitar strings, not Larkwood"), strings, 1.0)
    # The interest is the strings too: without the rule the Larkwood strings (s3) would follow the need's picks.
    picks = assemble(ids, vectors, prices, texts, cosine(vectors, (strings, 1.0)), [need], np.zeros((0, 3)), 5, PLAIN)
    listed = [p.item_id for p in picks]
    assert len(listed) == 5 and "s3" not in listed
    unruled = NeedQuery(parse_need("acoustic guitar strings"), strings, 1.0)
    assert "s3" in [p.item_id for p in assemble(ids, vectors, prices, texts, cosine(vectors, (strings, 1.0)), [unruled],
                                                np.zeros((0, 3)), 5, PLAIN)]
    # When nothing else is left, a ruled-out item still fills the list: K items.
    everyone = assemble(ids, vectors, prices, texts, cosine(vectors, (strings, 1.0)), [need], np.zeros((0, 3)), 9, PLAIN)
    assert len({p.item_id for p in everyone}) == 9 and everyone[-1].item_id == "s3"


def test_plain_top_k_when_nothing_steers():
    ids, vectors, prices, texts = catalogue()
    interest = unit([1, 0.3, 0.1])[0]
    picks = assemble(ids, vectors, prices, texts, cosine(vectors, (interest, 1.0)), [], np.zeros((0, 3)), 5, PLAIN)
    expected = sorted(ids, key=lambda item: (-(vectors[ids.index(item)] @ interest), item))[:5]
    assert [p.item_id for p in picks] == expected


def test_a_fresh_need_takes_the_first_slots_within_its_constraints():
    ids, vectors, prices, texts = catalogue()
    need = NeedQuery(parse_need("acoustic guitar strings under $20"), unit([0.3, 0, 1])[0], 1.0)
    picks = assemble(ids, vectors, prices, texts, cosine(vectors, (unit([1, 0, 0])[0], 1.0)), [need], np.zeros((0, 3)), 5,
                     PLAIN)
    assert [p.item_id for p in picks[:2]] == ["s1", "s2"] or [p.item_id for p in picks[:2]] == ["s2", "s1"]
    assert all(p.need == 0 for p in picks[:2]) and "s3" not in [p.item_id for p in picks[:2]]
    assert all(a.score >= b.score for a, b in zip(picks, picks[1:]))
    assert need_slots(10, 0.6, [need]) == [6] and need_slots(10, 0.6, []) == []


def test_dislikes_demote_and_two_interests_share_the_list():
    ids, vectors, prices, texts = catalogue()
    conf = PLAIN
    jazz, camping = unit([1, 0, 0])[0], unit([0, 1, 0])[0]
    both = assemble(ids, vectors, prices, texts, cosine(vectors, (jazz, 0.5), (camping, 0.5)), [], np.zeros((0, 3)), 4, conf)
    assert {p.item_id[0] for p in both} == {"j", "c"}
    plain = assemble(ids, vectors, prices, texts, cosine(vectors, (unit([1, 0.6, 0])[0], 1.0)), [], np.zeros((0, 3)), 4, conf)
    demoted = assemble(ids, vectors, prices, texts, cosine(vectors, (unit([1, 0.6, 0])[0], 1.0)), [], unit([0, 1, 0.1]), 4, conf)
    assert sum(p.item_id[0] == "c" for p in demoted) < sum(p.item_id[0] == "c" for p in plain)


def test_mmr_lowers_intra_list_similarity():
    ids, vectors, prices, texts = catalogue()
    interest = unit([1, 0.5, 0.5])[0]
    plain = assemble(ids, vectors, prices, texts, cosine(vectors, (interest, 1.0)), [], np.zeros((0, 3)), 4, PLAIN)
    diverse = assemble(ids, vectors, prices, texts, cosine(vectors, (interest, 1.0)), [], np.zeros((0, 3)), 4,
                       SteerSettings(mmr_weight=0.7))
    assert intra_list_similarity(np.array([p.vector for p in diverse])) < intra_list_similarity(
        np.array([p.vector for p in plain]))


def test_reasons_name_the_evidence_in_the_users_language():
    history = unit([1, 0, 0], [0, 1, 0], [0, 0, 1])
    kinds, labels, items = ["review", "dislike", "purchase"], ["Fender Picks", "Cheap Tent", "吉他"], ["p1", "t1", "g1"]
    item = unit([1, 0.1, 0])[0]
    assert explain("x", item, "picks", 5.0, None, history, kinds, labels, items, {"p1": 5.0}, []) == (
        'Similar to "Fender Picks", which you rated 5 stars')
    # A disliked entry is never the evidence, even when it is the closest one.
    assert "Cheap Tent" not in explain("x", unit([0, 1, 0.2])[0], "tent", 90.0, None, history, kinds, labels, items, {}, [])
    assert explain("x", unit([0, 0, 1])[0], "", 1.0, None, history, kinds, labels, items, {}, []) == '与您购买的"吉他"搭配'
    query = "不要苹果，2000元以下的手机"
    assert explain("x", item, "", 1.0, parse_need(query), history, kinds, labels, items, {}, []) == f'符合您的搜索"{query}"'
    # Only a need that placed the item says "Matches your search", and only when the item meets its bounds;
    # a past search in the history is never evidence.
    searched = (history[:1], ["search"], ["strings under $20"], [None], {}, [])
    need = parse_need("strings under $20")
    assert explain("x", item, "strings", 9.0, need, *searched) == 'Matches your search "strings under $20"'
    assert explain("x", item, "strings", 45.0, need, *searched) == "Matches your interests"
    assert explain("x", item, "strings", 9.0, None, *searched) == "Matches your interests"
    assert explain("x", item, "light gauge strings", 9.0, None, history[:0], [], [], [], {}, ["guitar strings"]) == (
        'Matches your interest in "guitar strings"')


def test_an_item_the_user_rated_low_is_never_the_evidence():
    """With negative feedback off (the default) a 1-star rating is still a `rate` entry: no reason rests on it."""
    from interestlake.models.reasons import ReasonWriter

    history = unit([1, 0, 0], [0.6, 0.8, 0], [0, 0, 1])
    evidence = (history, ["rate", "rate", "view"], ["Fuzzbox Pedal", "Chorus Pedal", "Tent"], ["f1", "c1", "t1"],
                {"f1": 1.0, "c1": 5.0}, [])
    near_the_fuzzbox = unit([1, 0.1, 0])[0]
    assert explain("x", near_the_fuzzbox, "pedal", 9.0, None, *evidence) == 'Similar to "Chorus Pedal", which you rated 5 stars'
    # The low-rated item itself, listed again: not "You rated this" either.
    assert explain("f1", history[0], "pedal", 9.0, None, *evidence) == 'Similar to "Chorus Pedal", which you rated 5 stars'
    # Its only evidence rated low: the topic or the generic line, never the disliked entry.
    only_low = (history[:1], ["rate"], ["Fuzzbox Pedal"], ["f1"], {"f1": 2.0}, [])
    assert explain("x", near_the_fuzzbox, "pedal", 9.0, None, *only_low) == "Matches your interests"
    # Where low ratings are allowed as evidence, one star is singular.
    writer = ReasonWriter(history[:1], [1], [["rate"]], [["Fuzzbox Pedal"]], [["f1"]], [{"f1": 1.0}], [[]], low_rating=None)
    lines = writer.write([["x"]], near_the_fuzzbox[None, :], [["pedal"]], [[9.0]], [[None]])
    assert lines == [['Similar to "Fuzzbox Pedal", which you rated 1 star']]


def test_a_far_entry_is_not_called_similar():
    """Under a learned model an item may be listed for what co-occurs with the user's items: its closest entry can be far."""
    history = unit([1, 0, 0])
    evidence = (history, ["view"], ["Uji Sencha Tea"], ["t1"], {}, ["microphones"])
    far = unit([0.2, 1, 0])[0]  # cosine 0.196 to the tea
    assert explain("m1", far, "dynamic microphone. microphones", 99.0, None, *evidence) == (
        'Matches your interest in "microphones"')
    assert explain("m1", far, "dynamic microphone", 99.0, None, *evidence[:5], []) == "Matches your interests"
    near = unit([1, 0.5, 0])[0]  # cosine 0.894
    assert explain("t2", near, "green tea", 9.0, None, *evidence) == 'Similar to "Uji Sencha Tea", which you viewed'


def test_one_block_of_users_gets_the_lines_each_user_gets_alone():
    """The writer's batched closest-entry product gives every user the line of a one-off writer.

    Seven users of every kind, then 33 of one shape (4 listed items, 5 viewed entries): more than
    the 16 stacked into one product; each user's lines are still their own writer's."""
    from interestlake.models.reasons import ReasonWriter

    rng = np.random.default_rng(4)
    kinds_of = ["view", "purchase", "review", "dislike", "search", "cart"]
    users = []
    for u in range(40):
        m = [0, 1, 5, 8, 3, 0, 6][u] if u < 7 else 5  # users without history and with a single entry too
        history = unit(*rng.normal(size=(m, 3)).tolist()) if m else np.zeros((0, 3), np.float32)
        kinds = [kinds_of[i] for i in rng.integers(0, len(kinds_of), m)] if u < 7 else ["view"] * m
        labels = [f"entry {u}-{i}" if i % 4 else ("吉他" if u % 2 else "") for i in range(m)]
        items = ([None if kind == "search" else f"i{rng.integers(0, 6)}" for kind in kinds] if u < 7
                 else [f"seen{u}-{i}" for i in range(m)])
        users.append((history, kinds, labels, items, {items[0]: 4.0} if m and items[0] else {}, ["guitar strings"]))
    listed = [[f"i{j}" for j in rng.choice(6, size=int(rng.integers(0, 5)) if u < 7 else 4, replace=False)] for u in range(len(users))]
    vectors = [unit(*rng.normal(size=(len(ids), 3)).tolist()) if ids else np.zeros((0, 3), np.float32) for ids in listed]
    texts = [["guitar strings" if j % 2 else "tent" for j in range(len(ids))] for ids in listed]
    prices = [[10.0] * len(ids) for ids in listed]
    needs = [[parse_need("strings under $20") if j == 0 and u == 2 else None for j in range(len(ids))]
             for u, ids in enumerate(listed)]
    writer = ReasonWriter(np.concatenate([h for h, *_ in users]), [len(k) for _, k, *_ in users],
                          *[[user[part] for user in users] for part in range(1, 6)])
    block = writer.write(listed, np.concatenate(vectors), texts, prices, needs)
    alone = [[explain(item, vector, text, price, need, *user) for item, vector, text, price, need in
              zip(listed[u], vectors[u], texts[u], prices[u], needs[u])] for u, user in enumerate(users)]
    assert block == alone
    assert sum(len(lines) for lines in block) > 10 and any('Matches your search' in line for lines in block for line in lines)
    assert any(line.startswith(("Similar to", "Goes with")) for lines in block for line in lines)
    # The entries as rows of a larger array (the scorer passes the item matrix and the keys): the same lines.
    flat = np.concatenate([h for h, *_ in users])
    pool = np.concatenate([rng.normal(size=(5, 3)).astype(np.float32), flat[::-1]])
    rows = len(pool) - 1 - np.arange(len(flat))
    by_rows = ReasonWriter(pool, [len(k) for _, k, *_ in users], *[[user[part] for user in users] for part in range(1, 6)],
                           entry_rows=rows)
    assert by_rows.write(listed, np.concatenate(vectors), texts, prices, needs) == block


def test_the_newest_entry_of_an_item_speaks_for_it_whatever_the_rounding():
    """A user who viewed, carted and bought one item: the line names the newest entry, even when
    the product's rounding favours an older one (seen on a cluster: "in your cart" there,
    "which you viewed" in local mode, for the same data)."""
    coffee, beans = unit([1.0, 0.2, 0.0], [0.0, 1.0, 0.3]).astype(np.float32)
    nudged = coffee * np.float32(1 + 1e-6)  # a rounding's worth closer to any listed item near it
    history = np.stack([coffee, nudged, coffee, beans])
    evidence = (history, ["view", "cart", "purchase", "view"], ["Colombia coffee"] * 3 + ["Beans"],
                ["i7", "i7", "i7", "i9"], {}, [])
    listed = unit([1.0, 0.25, 0.0])[0]
    assert explain("i1", listed, "coffee", 9.0, None, *evidence) == 'Similar to "Colombia coffee", which you viewed'
    # A review of the item carries its text's vector: it stays evidence of its own.
    review = unit([1.0, 0.25, 0.01])[0]
    reviewed = (np.stack([coffee, review]), ["view", "review"], ["Colombia coffee", "Colombia coffee"], ["i7", "i7"],
                {"i7": 5.0}, [])
    assert explain("i1", listed, "coffee", 9.0, None, *reviewed) == 'Similar to "Colombia coffee", which you rated 5 stars'


def test_steered_lists_equal_one_argmax_per_slot(monkeypatch):
    """The sorted shortcut (a need's or the interest's slots taken in one pass of the relevance order)
    equals a full argmax per slot (``mmr_pick`` with weight 0), on lists with several needs and
    interests (ties and exhausted candidates included)."""
    import interestlake.models.steering as steering
    from interestlake.models.diversity import mmr_pick

    rng = np.random.default_rng(4)
    words = ["strings", "tent", "phone", "picks", "jazz"]
    conf = SteerSettings(mmr_weight=0.0)
    cases = []
    for _ in range(150):
        n = int(rng.integers(3, 30))
        vectors = unit(*rng.normal(size=(n, 6)))
        texts = [f"{words[i % 5]} {words[(i * 3) % 5]}" for i in range(n)]
        prices = rng.uniform(1, 100, n)
        needs = [NeedQuery(parse_need(f"{words[int(rng.integers(0, 5))]} under ${int(rng.integers(10, 90))}"),
                         unit(rng.normal(size=6))[0], float(rng.uniform(0.3, 1))) for _ in range(int(rng.integers(0, 4)))]
        interests = [(unit(rng.normal(size=6))[0], share) for share in ([1.0] if rng.random() < 0.5 else [0.6, 0.4])]
        cases.append(([f"i{j:02d}" for j in range(n)], vectors, prices, texts, cosine(vectors, *interests), needs))
    fast = [[p.item_id for p in assemble(*case, np.zeros((0, 6)), 8, conf)] for case in cases]
    def one_argmax(relevance, allowed, orders, count=1):
        index = mmr_pick(relevance, None, np.zeros((0, 6)), 0.0, allowed)
        return [index] if index >= 0 else []

    monkeypatch.setattr(steering, "_most_relevant", one_argmax)
    slow = [[p.item_id for p in assemble(*case, np.zeros((0, 6)), 8, conf)] for case in cases]
    assert fast == slow


def test_a_relevance_array_never_takes_the_sort_order_of_another_with_its_id():
    """A freed array's id can be reused by the next one: the cached order must belong to this array."""
    from interestlake.models.steering import _most_relevant

    old, new = np.array([0.9, 0.1, 0.5]), np.array([0.1, 0.9, 0.5])
    everything = np.ones(3, dtype=bool)
    # What the cache would hold had `old` been freed and `new` been given its id.
    orders = {id(new): (old, np.argsort(-old, kind="stable"))}
    assert _most_relevant(new, everything, orders) == [1]
    assert _most_relevant(new, everything, orders, 3) == [1, 2, 0]
    assert orders[id(new)][0] is new  # the stale entry was replaced, not reused
