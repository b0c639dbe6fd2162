"""The seeded sample shop: contract fields, determinism and realism of the landing files."""

from __future__ import annotations

import gzip
import json
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from interestlake import constants as C
from interestlake.datasets.sample import SAMPLE_CATEGORIES, SampleSummary, generate_sample

END = datetime(2026, 11, 1, tzinfo=timezone.utc)
DAYS = 60

ITEM_FIELDS = {C.COL_ITEM_ID, C.COL_TITLE, C.COL_DESCRIPTION, C.COL_CATEGORY, C.COL_PRICE, C.COL_UPDATED_AT}
EVENT_FIELDS = {C.COL_EVENT_ID, C.COL_USER_ID, C.COL_ITEM_ID, C.COL_EVENT_TYPE, C.COL_TS}
REVIEW_FIELDS = {C.COL_REVIEW_ID, C.COL_USER_ID, C.COL_ITEM_ID, C.COL_RATING, C.COL_TEXT, C.COL_TS}


def _read_jsonl(path: Path) -> list[dict]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def _parse_iso(text: str) -> datetime:
    assert text.endswith("Z"), text
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)


class Sample:
    """The parsed files of one generate_sample call."""

    def __init__(self, summary: SampleSummary, *, n_users: int, days: int) -> None:
        self.summary = summary
        self.n_users = n_users
        self.days = days
        root = summary.landing_dir
        self.items = _read_jsonl(root / C.ITEMS / "items-0001.jsonl")
        self.events_gz = _read_jsonl(root / C.EVENTS / "events-0001.jsonl.gz")
        self.events_plain = _read_jsonl(root / C.EVENTS / "events-0002.jsonl")
        self.events = self.events_gz + self.events_plain
        self.reviews = _read_jsonl(root / C.REVIEWS / "reviews-0001.jsonl")
        self.items_by_id = {item[C.COL_ITEM_ID]: item for item in self.items}


@pytest.fixture(scope="module")
def default_sample(tmp_path_factory: pytest.TempPathFactory) -> Sample:
    return Sample(generate_sample(tmp_path_factory.mktemp("default") / "landing"), n_users=300, days=DAYS)


@pytest.fixture(scope="module")
def small_sample(tmp_path_factory: pytest.TempPathFactory) -> Sample:
    summary = generate_sample(tmp_path_factory.mktemp("small"), seed=7, n_users=30, n_items=40, days=14)
    return Sample(summary, n_users=30, days=14)


@pytest.fixture(params=["default", "small"])
def sample(request: pytest.FixtureRequest) -> Sample:
    return request.getfixturevalue(f"{request.param}_sample")


def _file_bytes(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


# --------------------------------------------------------------------------
# Determinism and layout
# --------------------------------------------------------------------------


def test_same_seed_gives_byte_identical_files(tmp_path: Path) -> None:
    first = generate_sample(tmp_path / "a", seed=3, n_users=40, n_items=50)
    second = generate_sample(tmp_path / "b", seed=3, n_users=40, n_items=50)
    assert _file_bytes(tmp_path / "a") == _file_bytes(tmp_path / "b")
    assert (first.users, first.items, first.events, first.reviews) == (
        second.users,
        second.items,
        second.events,
        second.reviews,
    )


def test_different_seed_gives_different_files(tmp_path: Path) -> None:
    generate_sample(tmp_path / "a", seed=3, n_users=40, n_items=50)
    generate_sample(tmp_path / "b", seed=4, n_users=40, n_items=50)
    first, second = _file_bytes(tmp_path / "a"), _file_bytes(tmp_path / "b")
    assert first.keys() == second.keys()
    for name in first:
        assert first[name] != second[name], name


def test_rerun_overwrites_files_and_leaves_no_staging_files(tmp_path: Path) -> None:
    generate_sample(tmp_path, seed=1, n_users=20, n_items=20)
    summary = generate_sample(tmp_path, seed=2, n_users=10, n_items=12)
    names = sorted(str(path.relative_to(tmp_path)) for path in tmp_path.rglob("*") if path.is_file())
    assert names == [
        "events/events-0001.jsonl.gz",
        "events/events-0002.jsonl",
        "items/items-0001.jsonl",
        "reviews/reviews-0001.jsonl",
    ]
    assert len(_read_jsonl(tmp_path / "items" / "items-0001.jsonl")) == summary.items == 12


def test_gzip_header_has_no_timestamp(default_sample: Sample) -> None:
    raw = default_sample.summary.files[1].read_bytes()
    assert raw[:2] == b"\x1f\x8b"
    assert raw[4:8] == b"\x00\x00\x00\x00"  # MTIME field


def test_summary_matches_files(sample: Sample) -> None:
    summary = sample.summary
    root = summary.landing_dir
    assert summary.files == (
        root / "items" / "items-0001.jsonl",
        root / "events" / "events-0001.jsonl.gz",
        root / "events" / "events-0002.jsonl",
        root / "reviews" / "reviews-0001.jsonl",
    )
    assert summary.items == len(sample.items)
    assert summary.events == len(sample.events)
    assert summary.reviews == len(sample.reviews)
    assert summary.users == len({event[C.COL_USER_ID] for event in sample.events})


def test_events_are_split_by_time_about_seventy_percent_first(sample: Sample) -> None:
    share = len(sample.events_gz) / len(sample.events)
    assert 0.65 <= share <= 0.75
    last_first = max(_parse_iso(e[C.COL_TS]) for e in sample.events_gz)
    first_second = min(_parse_iso(e[C.COL_TS]) for e in sample.events_plain)
    assert last_first <= first_second


# --------------------------------------------------------------------------
# Contract: fields, types, values
# --------------------------------------------------------------------------


def test_items_rows_follow_the_contract(sample: Sample) -> None:
    ids = [item[C.COL_ITEM_ID] for item in sample.items]
    assert len(set(ids)) == len(ids)
    assert len({item[C.COL_TITLE] for item in sample.items}) == len(ids)
    for item in sample.items:
        assert set(item) == ITEM_FIELDS
        assert item[C.COL_ITEM_ID].startswith("i-")
        assert isinstance(item[C.COL_TITLE], str) and item[C.COL_TITLE]
        assert isinstance(item[C.COL_DESCRIPTION], str) and item[C.COL_DESCRIPTION].endswith(".")
        assert item[C.COL_CATEGORY] in SAMPLE_CATEGORIES
        price = item[C.COL_PRICE]
        assert isinstance(price, float) and price > 0 and round(price, 2) == price
        # Catalogue rows predate the events that refer to them.
        assert _parse_iso(item[C.COL_UPDATED_AT]) <= END - timedelta(days=sample.days)
    assert {item[C.COL_CATEGORY] for item in sample.items} == set(SAMPLE_CATEGORIES)


def test_events_rows_follow_the_contract(sample: Sample) -> None:
    ids = [event[C.COL_EVENT_ID] for event in sample.events]
    assert len(set(ids)) == len(ids)
    window_start = END - timedelta(days=sample.days)
    for event in sample.events:
        event_type = event[C.COL_EVENT_TYPE]
        assert event_type in C.EVENT_TYPES
        expected = set(EVENT_FIELDS)
        if event_type == C.EVENT_SEARCH:
            expected.add(C.COL_TEXT)
        if event_type == C.EVENT_RATE:
            expected.add(C.COL_RATING)
        assert set(event) == expected, event
        assert event[C.COL_EVENT_ID].startswith("e-") and event[C.COL_USER_ID].startswith("u-")
        assert window_start <= _parse_iso(event[C.COL_TS]) <= END
        if event_type == C.EVENT_SEARCH:
            assert event[C.COL_ITEM_ID] is None
            assert isinstance(event[C.COL_TEXT], str) and event[C.COL_TEXT].strip()
        else:
            assert event[C.COL_ITEM_ID] in sample.items_by_id
        if event_type == C.EVENT_RATE:
            rating = event[C.COL_RATING]
            assert isinstance(rating, int) and not isinstance(rating, bool)
            assert C.RATING_MIN <= rating <= C.RATING_MAX


def test_reviews_rows_follow_the_contract(sample: Sample) -> None:
    ids = [review[C.COL_REVIEW_ID] for review in sample.reviews]
    assert len(set(ids)) == len(ids)
    for review in sample.reviews:
        assert set(review) == REVIEW_FIELDS
        assert review[C.COL_REVIEW_ID].startswith("r-")
        assert review[C.COL_ITEM_ID] in sample.items_by_id
        assert isinstance(review[C.COL_RATING], int) and C.RATING_MIN <= review[C.COL_RATING] <= C.RATING_MAX
        assert isinstance(review[C.COL_TEXT], str) and 0 < len(review[C.COL_TEXT]) <= 300
        # Epoch seconds, the other timestamp form the contract allows.
        assert isinstance(review[C.COL_TS], int) and not isinstance(review[C.COL_TS], bool)
        assert review[C.COL_TS] <= END.timestamp()


# --------------------------------------------------------------------------
# Behaviour: funnel, tastes, reviews
# --------------------------------------------------------------------------


def test_every_user_has_at_least_three_events(sample: Sample) -> None:
    per_user = Counter(event[C.COL_USER_ID] for event in sample.events)
    assert len(per_user) == sample.n_users
    assert min(per_user.values()) >= 3


def test_activity_is_heavy_tailed(default_sample: Sample) -> None:
    counts = sorted(Counter(event[C.COL_USER_ID] for event in default_sample.events).values())
    median = counts[len(counts) // 2]
    assert counts[-1] >= 5 * median
    assert counts[0] < median


def test_funnel_views_then_clicks_then_carts_then_purchases(sample: Sample) -> None:
    by_type = Counter(event[C.COL_EVENT_TYPE] for event in sample.events)
    assert by_type[C.EVENT_VIEW] > by_type[C.EVENT_CLICK] > by_type[C.EVENT_CART] > by_type[C.EVENT_PURCHASE] > 0
    assert by_type[C.EVENT_SEARCH] > 0 and by_type[C.EVENT_RATE] > 0


def test_purchase_follows_a_view_of_the_same_item_and_is_unique(sample: Sample) -> None:
    first_view: dict[tuple[str, str], datetime] = {}
    for event in sample.events:
        if event[C.COL_EVENT_TYPE] == C.EVENT_VIEW:
            key = (event[C.COL_USER_ID], event[C.COL_ITEM_ID])
            ts = _parse_iso(event[C.COL_TS])
            first_view[key] = min(ts, first_view.get(key, ts))
    purchases = [e for e in sample.events if e[C.COL_EVENT_TYPE] == C.EVENT_PURCHASE]
    keys = [(e[C.COL_USER_ID], e[C.COL_ITEM_ID]) for e in purchases]
    assert len(set(keys)) == len(keys), "a user bought the same item twice"
    for event, key in zip(purchases, keys):
        assert key in first_view, f"purchase without a view: {event}"
        assert first_view[key] < _parse_iso(event[C.COL_TS])


def test_rate_events_follow_a_purchase(sample: Sample) -> None:
    purchased_at = {
        (e[C.COL_USER_ID], e[C.COL_ITEM_ID]): _parse_iso(e[C.COL_TS])
        for e in sample.events
        if e[C.COL_EVENT_TYPE] == C.EVENT_PURCHASE
    }
    for event in sample.events:
        if event[C.COL_EVENT_TYPE] == C.EVENT_RATE:
            key = (event[C.COL_USER_ID], event[C.COL_ITEM_ID])
            assert key in purchased_at and purchased_at[key] < _parse_iso(event[C.COL_TS])


def test_reviews_are_by_the_purchaser_after_the_purchase(sample: Sample) -> None:
    purchased_at = {
        (e[C.COL_USER_ID], e[C.COL_ITEM_ID]): _parse_iso(e[C.COL_TS]).timestamp()
        for e in sample.events
        if e[C.COL_EVENT_TYPE] == C.EVENT_PURCHASE
    }
    keys = [(r[C.COL_USER_ID], r[C.COL_ITEM_ID]) for r in sample.reviews]
    assert len(set(keys)) == len(keys), "a user reviewed the same item twice"
    for review, key in zip(sample.reviews, keys):
        assert key in purchased_at, f"review without a purchase: {review}"
        assert review[C.COL_TS] > purchased_at[key]
    assert 0.25 <= len(sample.reviews) / len(purchased_at) <= 0.5


def test_item_events_concentrate_in_each_users_top_categories(sample: Sample) -> None:
    per_user: dict[str, Counter[str]] = defaultdict(Counter)
    for event in sample.events:
        if event[C.COL_ITEM_ID] is not None:
            per_user[event[C.COL_USER_ID]][sample.items_by_id[event[C.COL_ITEM_ID]][C.COL_CATEGORY]] += 1
    in_top3 = sum(sum(n for _, n in counts.most_common(3)) for counts in per_user.values())
    total = sum(sum(counts.values()) for counts in per_user.values())
    assert in_top3 / total >= 0.8
    # Light users touch few categories by chance; active users show whether tastes hold
    # (random browsing brings their top-3 share down to about 0.7).
    active = [counts for counts in per_user.values() if sum(counts.values()) >= 50]
    if len(active) >= 10:
        active_top3 = sum(sum(n for _, n in counts.most_common(3)) for counts in active)
        assert active_top3 / sum(sum(counts.values()) for counts in active) >= 0.88
    # Tastes differ: users do not all share one favourite category.
    favourites = Counter(counts.most_common(1)[0][0] for counts in per_user.values())
    assert len(favourites) >= 4 if len(per_user) >= 100 else len(favourites) >= 2


def test_search_queries_read_naturally_and_include_chinese(default_sample: Sample) -> None:
    queries = [e[C.COL_TEXT] for e in default_sample.events if e[C.COL_EVENT_TYPE] == C.EVENT_SEARCH]
    assert len(set(queries)) >= 50
    assert any(not query.isascii() for query in queries)
    assert all(len(query.split()) <= 10 and len(query) <= 80 for query in queries)


def test_default_sizes_and_review_realism(default_sample: Sample) -> None:
    summary = default_sample.summary
    assert summary.users == 300 and summary.items == 300
    assert 8_000 <= summary.events <= 15_000
    assert 500 <= summary.reviews <= 1_500
    texts = [review[C.COL_TEXT] for review in default_sample.reviews]
    assert len(set(texts)) >= 0.9 * len(texts)
    ratings = Counter(review[C.COL_RATING] for review in default_sample.reviews)
    assert (ratings[4] + ratings[5]) / len(texts) >= 0.6
    assert ratings[1] + ratings[2] > 0


def test_review_text_names_the_product_type_and_matches_the_rating(default_sample: Sample) -> None:
    negative_words = ("disappoint", "letdown", "regret", "not worth", "refund", "returned", "poor", "cheap",
                      "trouble", "not acceptable", "look elsewhere", "save your money", "gave up", "expected a lot more",
                      "did not live up", "weakest", "problems")  # fmt: skip
    for review in default_sample.reviews:
        text = review[C.COL_TEXT].lower()
        item = default_sample.items_by_id[review[C.COL_ITEM_ID]]
        # The product type ends the title's head: "Brand Line Electric Guitar, Attribute"
        # or, for books, "Title: A Jazz Novel by Author, Format".
        head = item[C.COL_TITLE].split(",")[0]
        if ": A " in head:
            head = head.split(": A ", 1)[1].rsplit(" by ", 1)[0]
        assert head.split()[-1].lower() in text, (item[C.COL_TITLE], text)
        if review[C.COL_RATING] <= 2:
            assert any(word in text for word in negative_words), text
        elif review[C.COL_RATING] >= 4:
            assert not any(word in text for word in ("disappoint", "regret", "refund", "letdown")), text


def test_prices_depend_on_product_type(default_sample: Sample) -> None:
    prices = defaultdict(list)
    for item in default_sample.items:
        for marker in ("Capo", "Digital Piano", "Guitar Strings", "Espresso Machine"):
            if marker in item[C.COL_TITLE]:
                prices[marker].append(item[C.COL_PRICE])
    assert prices["Capo"] and prices["Digital Piano"]
    assert max(prices["Capo"]) < min(prices["Digital Piano"])
    if prices["Guitar Strings"] and prices["Espresso Machine"]:
        assert max(prices["Guitar Strings"]) < min(prices["Espresso Machine"])


def test_minimum_sizes_work(tmp_path: Path) -> None:
    summary = generate_sample(tmp_path, n_users=1, n_items=len(SAMPLE_CATEGORIES), days=1)
    assert summary.users == 1 and summary.items == len(SAMPLE_CATEGORIES) and summary.events >= 3
    for event in Sample(summary, n_users=1, days=1).events:
        assert END - timedelta(days=1) <= _parse_iso(event[C.COL_TS]) <= END


def test_non_utc_end_time_is_honoured(tmp_path: Path) -> None:
    tz = timezone(timedelta(hours=8))
    end = datetime(2026, 3, 1, 12, 30, 15, 999_999, tzinfo=tz)
    sample = Sample(generate_sample(tmp_path, n_users=20, n_items=20, days=3, end_time=end), n_users=20, days=3)
    for event in sample.events:
        assert end - timedelta(days=3) <= _parse_iso(event[C.COL_TS]) <= end
    for review in sample.reviews:
        assert review[C.COL_TS] <= end.timestamp()


# --------------------------------------------------------------------------
# Argument validation
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"n_users": 0}, "n_users"),
        ({"n_users": 2.5}, "n_users"),
        ({"n_users": True}, "n_users"),
        ({"n_items": len(SAMPLE_CATEGORIES) - 1}, "n_items"),
        ({"days": 0}, "days"),
        ({"days": "7"}, "days"),
        ({"seed": "42"}, "seed"),
        ({"end_time": datetime(2026, 11, 1)}, "end_time"),
        ({"end_time": "2026-11-01T00:00:00Z"}, "end_time"),
    ],
)
def test_invalid_arguments_raise_value_error_naming_the_argument(tmp_path: Path, kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        generate_sample(tmp_path, **kwargs)
    assert not any(tmp_path.iterdir()), "nothing is written before the arguments are validated"
