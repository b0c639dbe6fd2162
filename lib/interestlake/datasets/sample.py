"""Seeded sample shop data written as landing files (DESIGN.md section 4).

The demo, the end-to-end tests and the benchmarks all need input that reads
like a real shop: a catalogue with believable titles and prices, users with
distinct tastes, a view -> click -> cart -> purchase funnel, typed searches and
reviews whose tone matches their rating. Everything is drawn from one
``random.Random(seed)`` so the same arguments always give byte-identical files.
The words themselves (categories, brands, product types, query and review
sentences) are package data, ``sample_vocabulary.json`` next to this module;
this module holds the logic and the numbers that shape the behaviour.

Layout written under ``landing_dir``::

    items/items-0001.jsonl          catalogue, ISO-8601 ``updated_at``
    events/events-0001.jsonl.gz     first ~70% of the events by time, gzipped
    events/events-0002.jsonl        the rest, plain JSON lines
    reviews/reviews-0001.jsonl      reviews, ``ts`` as epoch seconds
"""

from __future__ import annotations

import json
import math
import os
import random
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from importlib import resources
from pathlib import Path

from interestlake import constants as C
from interestlake.datasets.landing import write_jsonl

__all__ = ["SAMPLE_CATEGORIES", "SampleSummary", "generate_sample"]


# --------------------------------------------------------------------------
# Vocabulary (package data: sample_vocabulary.json)
# --------------------------------------------------------------------------

_VOCABULARY_FILE = "sample_vocabulary.json"


@dataclass(frozen=True)
class _ProductType:
    """One kind of product inside a category, with its own vocabulary."""

    name: str
    price_low: float
    price_high: float
    lines: tuple[str, ...]
    attributes: tuple[str, ...]
    # Noun phrases that complete "built with ..." (for books: a blurb).
    materials: tuple[str, ...]
    # Whole sentences about a feature.
    features: tuple[str, ...]
    # Singular noun phrases a reviewer praises or blames ("the tone").
    aspects: tuple[str, ...]
    plural: bool = False

    @property
    def noun(self) -> str:
        """The name as it reads mid-sentence: lower case, acronyms kept ("MIDI keyboard controller")."""
        return " ".join(word if word.isupper() and len(word) > 1 else word.lower() for word in self.name.split())


@dataclass(frozen=True)
class _Category:
    """A shop category: brands, product types, uses and search phrasing."""

    name: str
    # Relative share of the catalogue and of first-choice tastes.
    weight: float
    # Categories in the same group are "related" when picking a user's tastes.
    group: str
    brands: tuple[str, ...]
    product_types: tuple[_ProductType, ...]
    # Activities that complete "for ..." ("weekend gigs").
    uses: tuple[str, ...]
    # Query templates with {q} (product type), {budget}, {brand}, {attribute}.
    query_templates: tuple[str, ...]
    # Hand-written queries: (text, product type name or "" for any).
    queries: tuple[tuple[str, str], ...]
    queries_zh: tuple[tuple[str, str], ...]
    # The next four come from the file's "category_defaults" unless a category sets its own:
    # books read "Title: A Jazz Novel by Author, Paperback", and beans or books are not "built".
    title_template: str
    # Whether every title carries an attribute (gear often has none).
    attribute_always: bool
    intro_templates: tuple[str, ...]
    closing_templates: tuple[str, ...]


@dataclass(frozen=True)
class _Vocabulary:
    """Everything the generator says, as read from the package's vocabulary file.

    Review sentences are keyed by tone ("positive", "mixed", "negative"). Their
    placeholders: {this_item} ("this capo" / "these strings"), {noun}, {obj}
    ("it" / "them"), {subj}, {be}, {have}, {aspect}, {aspect2}, {use}, {use2},
    {brand}, {duration}; the first letter of each sentence is upper-cased afterwards.

    Attributes:
        categories: The shop's categories, in catalogue order.
        review_openers: First sentences of a review.
        review_aspect_sentences: Sentences about one or two aspects, after an opener that
            names the product.
        review_product_aspect_sentences: Sentences naming both the product and an aspect, for
            short reviews and after openers that do not name the product themselves.
        review_closers: Last sentences of a review.
        review_durations: How long a reviewer has owned the item ("about a month").
    """

    categories: tuple[_Category, ...]
    review_openers: dict[str, tuple[str, ...]]
    review_aspect_sentences: dict[str, tuple[str, ...]]
    review_product_aspect_sentences: dict[str, tuple[str, ...]]
    review_closers: dict[str, tuple[str, ...]]
    review_durations: tuple[str, ...]


def _load_vocabulary() -> _Vocabulary:
    """Reads the vocabulary file shipped with this package (JSON: lists become tuples)."""
    raw = json.loads(resources.files(__package__).joinpath(_VOCABULARY_FILE).read_text(encoding="utf-8"))
    defaults = raw["category_defaults"]
    reviews = raw["reviews"]
    return _Vocabulary(
        categories=tuple(_category({**defaults, **entry}) for entry in raw["categories"]),
        review_openers=_by_tone(reviews["openers"]),
        review_aspect_sentences=_by_tone(reviews["aspect_sentences"]),
        review_product_aspect_sentences=_by_tone(reviews["product_aspect_sentences"]),
        review_closers=_by_tone(reviews["closers"]),
        review_durations=tuple(reviews["durations"]),
    )


def _category(entry: dict) -> _Category:
    return _Category(
        name=entry["name"],
        weight=entry["weight"],
        group=entry["group"],
        brands=tuple(entry["brands"]),
        product_types=tuple(_product_type(product_type) for product_type in entry["product_types"]),
        uses=tuple(entry["uses"]),
        query_templates=tuple(entry["query_templates"]),
        queries=tuple((text, type_name) for text, type_name in entry["queries"]),
        queries_zh=tuple((text, type_name) for text, type_name in entry["queries_zh"]),
        title_template=entry["title_template"],
        attribute_always=entry["attribute_always"],
        intro_templates=tuple(entry["intro_templates"]),
        closing_templates=tuple(entry["closing_templates"]),
    )


def _product_type(entry: dict) -> _ProductType:
    price_low, price_high = entry["price"]
    return _ProductType(
        name=entry["name"],
        price_low=price_low,
        price_high=price_high,
        lines=tuple(entry["lines"]),
        attributes=tuple(entry["attributes"]),
        materials=tuple(entry["materials"]),
        features=tuple(entry["features"]),
        aspects=tuple(entry["aspects"]),
        plural=entry.get("plural", False),
    )


def _by_tone(sentences: dict[str, list[str]]) -> dict[str, tuple[str, ...]]:
    return {tone: tuple(texts) for tone, texts in sentences.items()}


# Read once, at import: every generator call and review_sentences() share it.
_VOCABULARY = _load_vocabulary()
_CATEGORIES = _VOCABULARY.categories
_REVIEW_OPENERS = _VOCABULARY.review_openers
_REVIEW_ASPECT_SENTENCES = _VOCABULARY.review_aspect_sentences
_REVIEW_PRODUCT_ASPECT_SENTENCES = _VOCABULARY.review_product_aspect_sentences
_REVIEW_CLOSERS = _VOCABULARY.review_closers
_REVIEW_DURATIONS = _VOCABULARY.review_durations

SAMPLE_CATEGORIES: tuple[str, ...] = tuple(category.name for category in _CATEGORIES)
"""Category names used in the sample catalogue, in a fixed order."""


# --------------------------------------------------------------------------
# Generator parameters
# --------------------------------------------------------------------------

# Longest review text; sentences are dropped from the end until it fits.
_MAX_REVIEW_CHARS = 300

# Rating distributions (weights for 1..5 stars): most buyers are happy, but a
# few items are duds and collect most of the bad ratings.
_RATING_WEIGHTS_GOOD = (0.04, 0.05, 0.11, 0.33, 0.47)
_RATING_WEIGHTS_DUD = (0.22, 0.24, 0.24, 0.18, 0.12)
_DUD_SHARE = 0.1

# Share of a session's activity per local hour (UTC here: a one-market shop):
# quiet nights, a lunch bump and an evening peak.
_HOUR_WEIGHTS = (
    0.4, 0.25, 0.15, 0.1, 0.1, 0.15, 0.4, 0.8, 1.0, 1.1, 1.2, 1.3,
    1.6, 1.5, 1.2, 1.1, 1.2, 1.4, 1.8, 2.2, 2.4, 2.2, 1.6, 0.9,
)  # fmt: skip

# Funnel conversion (per step) and follow-up probabilities.
_P_CLICK = 0.6
_P_CART = 0.7
_P_PURCHASE = 0.85
_P_RATE = 0.25
_P_REVIEW = 0.4
# Share of a user's sessions outside their favourite categories.
_P_OFF_TASTE = 0.1
# Share of picks inside a category that go to the user's preferred product types.
_P_PREFERRED_TYPE = 0.6
_P_REVISIT = 0.2
_P_CHINESE_QUERY = 0.07
_MIN_EVENTS_PER_USER = 3
# Share of events (by time) that go into the gzipped first events file.
_FIRST_EVENTS_FILE_SHARE = 0.7

_BUDGETS = (10, 15, 20, 25, 30, 40, 50, 75, 100, 150, 200, 250, 300, 400, 500, 750, 1000, 1500, 2000, 3000)


# --------------------------------------------------------------------------
# Internal records
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Item:
    item_id: str
    category_index: int
    type_index: int
    brand: str
    title: str
    price: float
    popularity: float
    dud: bool

    @property
    def product_type(self) -> _ProductType:
        return _CATEGORIES[self.category_index].product_types[self.type_index]


@dataclass
class _Taste:
    """A user's favourite categories (with weights) and preferred product types."""

    categories: list[int]
    weights: list[float]
    preferred_types: dict[int, list[int]]
    searcher: bool


@dataclass(frozen=True)
class _Event:
    ts: int
    user_index: int
    seq: int
    event_type: str
    item_id: str | None = None
    text: str | None = None
    rating: int | None = None


@dataclass(frozen=True)
class _Review:
    ts: int
    user_index: int
    item_id: str
    rating: int
    text: str


@dataclass
class _UserHistory:
    """What one user has done so far; membership sets are never iterated."""

    purchased: set[str] = field(default_factory=set)
    viewed_by_category: dict[int, list[str]] = field(default_factory=dict)


# --------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class SampleSummary:
    """What :func:`generate_sample` wrote.

    Attributes:
        landing_dir: The landing root that holds ``items/``, ``events/`` and ``reviews/``.
        users: Distinct users that have at least one event.
        items: Catalogue rows written.
        events: Event rows written, over both events files.
        reviews: Review rows written.
        files: Every file written, items first, then events, then reviews.
    """

    landing_dir: Path
    users: int
    items: int
    events: int
    reviews: int
    files: tuple[Path, ...]


def generate_sample(
    landing_dir: str | os.PathLike[str],
    *,
    seed: int = 42,
    n_users: int = 300,
    n_items: int = 300,
    days: int = 60,
    end_time: datetime = datetime(2026, 11, 1, tzinfo=timezone.utc),
) -> SampleSummary:
    """Write a realistic, seeded sample shop (items, events, reviews) as landing files.

    The same arguments always produce byte-identical files; existing files
    with the same names are replaced.

    Args:
        landing_dir: Landing root; ``items/``, ``events/`` and ``reviews/`` are created under it.
        seed: Seed of the only random generator used.
        n_users: Number of users; every user gets at least three events.
        n_items: Number of catalogue items; at least one per sample category.
        days: Length of the event window that ends at ``end_time``.
        end_time: Timezone-aware end of the event window; no event or review is later.

    Returns:
        A :class:`SampleSummary` with the row counts and the files written.

    Raises:
        ValueError: If an argument is out of range or of the wrong type.
    """
    _validate(seed=seed, n_users=n_users, n_items=n_items, days=days, end_time=end_time)
    root = Path(landing_dir)
    rng = random.Random(seed)

    # Whole seconds only: the files carry second precision, and rounding the
    # window inwards keeps every written ts inside [end_time - days, end_time].
    end_epoch = math.floor(end_time.timestamp())
    start_epoch = math.ceil((end_time - timedelta(days=days)).timestamp())

    items = _build_catalogue(rng, n_items, start_epoch)
    item_rows = [row for row, _ in items]
    catalogue = [item for _, item in items]
    tastes = [_make_taste(rng) for _ in range(n_users)]
    events, reviews = _simulate(rng, catalogue, tastes, start_epoch, end_epoch)

    events.sort(key=lambda e: (e.ts, e.user_index, e.seq))
    reviews.sort(key=lambda r: (r.ts, r.user_index, r.item_id))
    event_rows = [_event_row(index, event) for index, event in enumerate(events, start=1)]
    review_rows = [_review_row(index, review) for index, review in enumerate(reviews, start=1)]

    split = _split_index(len(event_rows))
    items_path = root / C.ITEMS / "items-0001.jsonl"
    events_gz_path = root / C.EVENTS / "events-0001.jsonl.gz"
    events_path = root / C.EVENTS / "events-0002.jsonl"
    reviews_path = root / C.REVIEWS / "reviews-0001.jsonl"
    write_jsonl(items_path, item_rows)
    write_jsonl(events_gz_path, event_rows[:split])
    write_jsonl(events_path, event_rows[split:])
    write_jsonl(reviews_path, review_rows)

    return SampleSummary(
        landing_dir=root,
        users=len({event.user_index for event in events}),
        items=len(item_rows),
        events=len(event_rows),
        reviews=len(review_rows),
        files=(items_path, events_gz_path, events_path, reviews_path),
    )


# --------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------


def _require_int(name: str, value: object, minimum: int) -> None:
    # bool is an int subclass; True as a user count is a bug, not a 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def _validate(*, seed: object, n_users: object, n_items: object, days: object, end_time: object) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    _require_int("n_users", n_users, 1)
    _require_int("n_items", n_items, len(_CATEGORIES))
    _require_int("days", days, 1)
    if not isinstance(end_time, datetime):
        raise ValueError(f"end_time must be a timezone-aware datetime, got {end_time!r}")
    if end_time.tzinfo is None or end_time.utcoffset() is None:
        raise ValueError(f"end_time must be timezone-aware (e.g. tzinfo=timezone.utc), got naive {end_time.isoformat()}")


# --------------------------------------------------------------------------
# Catalogue
# --------------------------------------------------------------------------


def _build_catalogue(rng: random.Random, n_items: int, start_epoch: int) -> list[tuple[dict, _Item]]:
    # One item per category first so every category exists even at the
    # minimum size; the rest follow the category weights.
    category_of_item = list(range(len(_CATEGORIES)))
    category_weights = [category.weight for category in _CATEGORIES]
    category_of_item += rng.choices(range(len(_CATEGORIES)), weights=category_weights, k=n_items - len(_CATEGORIES))
    rng.shuffle(category_of_item)

    titles_taken: set[str] = set()
    built: list[tuple[dict, _Item]] = []
    for index, category_index in enumerate(category_of_item, start=1):
        category = _CATEGORIES[category_index]
        type_index = rng.randrange(len(category.product_types))
        product_type = category.product_types[type_index]
        brand, line, title = _unique_title(rng, category, product_type, titles_taken)
        titles_taken.add(title)
        price = _price(rng, product_type)
        # Catalogue rows predate the event window so every event refers to a known item.
        updated_epoch = start_epoch - rng.randrange(1, 120) * 86400 + rng.randrange(8, 19) * 3600
        updated_epoch -= updated_epoch % 3600
        item = _Item(
            item_id=f"i-{index:04d}",
            category_index=category_index,
            type_index=type_index,
            brand=brand,
            title=title,
            price=price,
            # Heavy-tailed popularity gives a few best sellers and a long tail.
            popularity=min(rng.paretovariate(1.2), 50.0),
            dud=rng.random() < _DUD_SHARE,
        )
        row = {
            C.COL_ITEM_ID: item.item_id,
            C.COL_TITLE: title,
            C.COL_DESCRIPTION: _description(rng, category, product_type, brand, line),
            C.COL_CATEGORY: category.name,
            C.COL_PRICE: price,
            C.COL_UPDATED_AT: _iso(updated_epoch),
        }
        built.append((row, item))
    return built


def _unique_title(
    rng: random.Random, category: _Category, product_type: _ProductType, taken: set[str]
) -> tuple[str, str, str]:
    brand = line = title = ""
    for _ in range(40):
        brand = rng.choice(category.brands)
        line = rng.choice(product_type.lines)
        title = _title(rng, category, product_type, brand, line)
        if title not in taken:
            return brand, line, title
    # Large catalogues exhaust the combinations; an edition year keeps titles unique
    # and still reads like a real listing.
    base = title
    for year in range(2019, 2100):
        title = f"{base} ({year} Edition)"
        if title not in taken:
            return brand, line, title
    serial = 2
    while f"{base} (No. {serial})" in taken:
        serial += 1
    return brand, line, f"{base} (No. {serial})"


def _title(rng: random.Random, category: _Category, product_type: _ProductType, brand: str, line: str) -> str:
    attribute = ""
    if category.attribute_always or rng.random() < 0.75:
        attribute = ", " + rng.choice(product_type.attributes)
    return category.title_template.format(brand=brand, line=line, ptype=product_type.name, attribute=attribute)


def _price(rng: random.Random, product_type: _ProductType) -> float:
    # Log-uniform so cheap and premium models are equally common within a type.
    raw = math.exp(rng.uniform(math.log(product_type.price_low), math.log(product_type.price_high)))
    if raw >= 20:
        # Shop prices end in .99 (or a round .00 now and then).
        whole = max(1, round(raw))
        return float(whole) if rng.random() < 0.1 else round(whole - 0.01, 2)
    return round(math.floor(raw) + rng.choice((0.49, 0.95, 0.99)), 2)


def _description(
    rng: random.Random, category: _Category, product_type: _ProductType, brand: str, line: str
) -> str:
    fill = {
        "brand": brand,
        "line": line,
        "noun": product_type.noun,
        "material": rng.choice(product_type.materials),
        "use": _shop_voice(rng.choice(category.uses)),
        **_item_words(product_type),
    }
    sentences = [rng.choice(category.intro_templates).format(**fill)]
    n_sentences = rng.choices((1, 2, 3), weights=(0.15, 0.45, 0.4))[0]
    if n_sentences >= 2:
        sentences.append(rng.choice(product_type.features))
    if n_sentences == 3:
        fill["use"] = _shop_voice(rng.choice(category.uses))
        sentences.append(rng.choice(category.closing_templates).format(**fill))
    return " ".join(_capitalise(sentence) for sentence in sentences)


def _shop_voice(use: str) -> str:
    # Uses are written as a buyer says them ("my book club"); the shop says "your".
    return re.sub(r"\bmy\b", "your", use)


def _item_words(product_type: _ProductType) -> dict[str, str]:
    if product_type.plural:
        return {"this_item": f"these {product_type.noun}", "subj": "they", "obj": "them", "be": "are", "have": "have"}
    return {"this_item": f"this {product_type.noun}", "subj": "it", "obj": "it", "be": "is", "have": "has"}


# --------------------------------------------------------------------------
# Users and behaviour
# --------------------------------------------------------------------------


def _make_taste(rng: random.Random) -> _Taste:
    n_categories = len(_CATEGORIES)
    n_favourites = rng.choices((1, 2, 3), weights=(0.3, 0.45, 0.25))[0]
    first = rng.choices(range(n_categories), weights=[c.weight for c in _CATEGORIES])[0]
    favourites = [first]
    while len(favourites) < n_favourites:
        related = [
            index
            for index in range(n_categories)
            if index not in favourites and _CATEGORIES[index].group == _CATEGORIES[first].group
        ]
        unrelated = [
            index
            for index in range(n_categories)
            if index not in favourites and _CATEGORIES[index].group != _CATEGORIES[first].group
        ]
        # About half of the multi-interest users mix unrelated worlds
        # (jazz books and camping gear), the rest stay close to home.
        pool = related if related and rng.random() < 0.5 else (unrelated or related)
        favourites.append(rng.choice(pool))
    weights = sorted((rng.uniform(0.5, 1.0) ** 2 for _ in favourites), reverse=True)
    total = sum(weights)
    preferred_types = {}
    for category_index in favourites:
        n_types = len(_CATEGORIES[category_index].product_types)
        preferred_types[category_index] = rng.sample(range(n_types), k=min(n_types, rng.choice((1, 2))))
    return _Taste(
        categories=favourites,
        weights=[weight / total for weight in weights],
        preferred_types=preferred_types,
        searcher=rng.random() < 0.5,
    )


def _simulate(
    rng: random.Random,
    catalogue: list[_Item],
    tastes: list[_Taste],
    start_epoch: int,
    end_epoch: int,
) -> tuple[list[_Event], list[_Review]]:
    by_category: dict[int, list[_Item]] = {}
    by_type: dict[tuple[int, int], list[_Item]] = {}
    for item in catalogue:
        by_category.setdefault(item.category_index, []).append(item)
        by_type.setdefault((item.category_index, item.type_index), []).append(item)
    items_by_id = {item.item_id: item for item in catalogue}

    events: list[_Event] = []
    reviews: list[_Review] = []
    for user_index, taste in enumerate(tastes):
        history = _UserHistory()
        user_events: list[_Event] = []
        # Heavy-tailed activity: most users drop by a few times, a few live here.
        n_sessions = min(80, max(1, int(3.4 * rng.paretovariate(1.7))))
        session = 0
        while session < n_sessions or len(user_events) < _MIN_EVENTS_PER_USER:
            session += 1
            _run_session(
                rng, user_index, taste, history, by_category, by_type, items_by_id,
                start_epoch, end_epoch, user_events, reviews,
            )  # fmt: skip
        events.extend(user_events)
    return events, reviews


def _run_session(
    rng: random.Random,
    user_index: int,
    taste: _Taste,
    history: _UserHistory,
    by_category: dict[int, list[_Item]],
    by_type: dict[tuple[int, int], list[_Item]],
    items_by_id: dict[str, _Item],
    start_epoch: int,
    end_epoch: int,
    out_events: list[_Event],
    out_reviews: list[_Review],
) -> None:
    if rng.random() < _P_OFF_TASTE:
        others = [index for index in range(len(_CATEGORIES)) if index not in taste.categories]
        category_index = rng.choice(others)
        preferred: list[int] = []
    else:
        category_index = rng.choices(taste.categories, weights=taste.weights)[0]
        preferred = taste.preferred_types[category_index]
    category = _CATEGORIES[category_index]

    # Offsets from the session start; the start is chosen once the length is known.
    steps: list[tuple[int, str, str | None, str | None]] = []
    offset = 0

    def step(event_type: str, item_id: str | None = None, text: str | None = None) -> None:
        nonlocal offset
        steps.append((offset, event_type, item_id, text))
        offset += rng.randint(8, 240)

    target_type: int | None = None
    budget: float | None = None
    p_search = 0.4 if taste.searcher else 0.05
    if rng.random() < p_search:
        query, target_type, budget = _search_query(rng, category, preferred)
        step(C.EVENT_SEARCH, text=query)

    n_views = rng.choices((1, 2, 3, 4, 5, 6), weights=(0.3, 0.27, 0.2, 0.12, 0.07, 0.04))[0]
    seen_in_session: set[str] = set()
    cart: list[str] = []
    for _ in range(n_views):
        item = _pick_item(
            rng, category_index, preferred, target_type, budget, history, by_category, by_type, seen_in_session
        )
        if item is None:
            break
        seen_in_session.add(item.item_id)
        viewed = history.viewed_by_category.setdefault(category_index, [])
        if item.item_id not in viewed:
            viewed.append(item.item_id)
        step(C.EVENT_VIEW, item.item_id)
        if rng.random() >= _P_CLICK:
            continue
        step(C.EVENT_CLICK, item.item_id)
        if item.item_id in history.purchased or rng.random() >= _P_CART:
            continue
        step(C.EVENT_CART, item.item_id)
        cart.append(item.item_id)

    # Checkout at the end of the session, after every view of the carted items.
    purchases: list[tuple[int, str]] = []
    for item_id in cart:
        if rng.random() < _P_PURCHASE:
            purchases.append((offset, item_id))
            history.purchased.add(item_id)
            step(C.EVENT_PURCHASE, item_id)

    duration = steps[-1][0] if steps else 0
    session_start = _session_start(rng, start_epoch, end_epoch - duration)
    for offset_s, event_type, item_id, text in steps:
        out_events.append(_Event(session_start + offset_s, user_index, len(out_events), event_type, item_id, text))

    for offset_s, item_id in purchases:
        purchase_ts = session_start + offset_s
        item = items_by_id[item_id]
        rating = _rating(rng, item)
        if rng.random() < _P_RATE:
            rate_ts = _after(rng, purchase_ts, end_epoch, 2 * 3600, 10 * 86400)
            if rate_ts is not None:
                out_events.append(_Event(rate_ts, user_index, len(out_events), C.EVENT_RATE, item_id, rating=rating))
        if rng.random() < _P_REVIEW:
            review_ts = _after(rng, purchase_ts, end_epoch, 6 * 3600, 21 * 86400)
            if review_ts is not None:
                text = _review_text(rng, item, rating)
                out_reviews.append(_Review(review_ts, user_index, item_id, rating, text))


def _pick_item(
    rng: random.Random,
    category_index: int,
    preferred: list[int],
    target_type: int | None,
    budget: float | None,
    history: _UserHistory,
    by_category: dict[int, list[_Item]],
    by_type: dict[tuple[int, int], list[_Item]],
    seen_in_session: set[str],
) -> _Item | None:
    if target_type is not None and rng.random() < 0.85:
        pool = by_type.get((category_index, target_type), [])
    elif preferred and rng.random() < _P_PREFERRED_TYPE:
        pool = [item for type_index in preferred for item in by_type.get((category_index, type_index), [])]
    else:
        pool = []
    if not pool:
        pool = by_category[category_index]
    if budget is not None:
        pool = [item for item in pool if item.price <= budget] or pool
    pool = [item for item in pool if item.item_id not in seen_in_session]

    # People come back to things they looked at before; that is how most
    # purchases happen after several visits.
    viewed = history.viewed_by_category.get(category_index, [])
    if viewed and rng.random() < _P_REVISIT:
        candidates = [item_id for item_id in viewed if item_id not in seen_in_session]
        revisit = {item.item_id: item for item in pool}
        candidates = [item_id for item_id in candidates if item_id in revisit]
        if candidates:
            return revisit[rng.choice(candidates)]
    if not pool:
        return None
    return rng.choices(pool, weights=[item.popularity for item in pool])[0]


def _search_query(
    rng: random.Random, category: _Category, preferred: list[int]
) -> tuple[str, int | None, float | None]:
    """A query text, the product type it targets (or None) and its price cap (or None)."""
    type_names = [product_type.name for product_type in category.product_types]
    roll = rng.random()
    if roll < _P_CHINESE_QUERY:
        text, type_name = rng.choice(category.queries_zh)
        return text, (type_names.index(type_name) if type_name else None), None
    if roll < 0.45:
        text, type_name = rng.choice(category.queries)
        budget = _budget_in(text)
        return text, (type_names.index(type_name) if type_name else None), budget

    type_index = rng.choice(preferred) if preferred else rng.randrange(len(category.product_types))
    product_type = category.product_types[type_index]
    templates = list(category.query_templates)
    budgets = [b for b in _BUDGETS if product_type.price_low * 1.3 <= b <= product_type.price_high]
    if not budgets:
        templates = [t for t in templates if "{budget}" not in t] or ["{q}"]
    template = rng.choice(templates)
    budget = float(rng.choice(budgets)) if "{budget}" in template else None
    attribute = rng.choice(product_type.attributes).lower().replace(",", "")
    text = template.format(
        q=product_type.noun,
        budget=int(budget) if budget is not None else "",
        brand=rng.choice(category.brands).lower(),
        attribute=attribute,
    )
    return text, type_index, budget


def _budget_in(text: str) -> float | None:
    # Hand-written queries such as "... under 200" carry their own price cap.
    words = text.split()
    for previous, word in zip(words, words[1:]):
        if previous == "under" and word.isdigit():
            return float(word)
    return None


def _session_start(rng: random.Random, earliest: int, latest: int) -> int:
    """A session start in [earliest, latest], preferring the shop's busy hours."""
    latest = max(earliest, latest)
    day_zero = earliest - earliest % 86400
    n_days = (latest - day_zero) // 86400 + 1
    for _ in range(20):
        hour = rng.choices(range(24), weights=_HOUR_WEIGHTS)[0]
        candidate = day_zero + rng.randrange(n_days) * 86400 + hour * 3600 + rng.randrange(3600)
        if earliest <= candidate <= latest:
            return candidate
    # The window is too short for a busy hour to fit: any time will do.
    return rng.randint(earliest, latest)


def _after(rng: random.Random, ts: int, end_epoch: int, min_delay: int, max_delay: int) -> int | None:
    """A time strictly after ``ts`` and not after ``end_epoch``, or None when there is no room."""
    room = end_epoch - ts
    if room < 60:
        return None
    if room < min_delay:
        return ts + rng.randint(60, room)
    return ts + rng.randint(min_delay, min(max_delay, room))


def _rating(rng: random.Random, item: _Item) -> int:
    weights = _RATING_WEIGHTS_DUD if item.dud else _RATING_WEIGHTS_GOOD
    return rng.choices(range(C.RATING_MIN, C.RATING_MAX + 1), weights=weights)[0]


def _review_text(rng: random.Random, item: _Item, rating: int) -> str:
    tone = "positive" if rating >= 4 else ("mixed" if rating == 3 else "negative")
    product_type = item.product_type
    category = _CATEGORIES[item.category_index]
    aspect, aspect2 = rng.sample(product_type.aspects, 2)
    # Two different uses so an opener and a closer never repeat the same phrase.
    uses = rng.sample(category.uses, 2)
    fill = {
        "noun": product_type.noun,
        "aspect": aspect,
        "aspect2": aspect2,
        "use": uses[0],
        "use2": uses[1],
        "brand": item.brand,
        "duration": rng.choice(_REVIEW_DURATIONS),
        **_item_words(product_type),
    }
    closers = _REVIEW_CLOSERS[tone]
    if rating != 5:
        closers = tuple(c for c in closers if c != "Five stars from me.")
    # Every review names the product and an aspect; the opener and closer vary
    # the length (1-3 sentences).
    shape = rng.choices(("aspect", "opener+aspect", "aspect+closer", "opener+aspect+closer"), weights=(0.1, 0.35, 0.2, 0.35))[0]
    sentences: list[str] = []
    if shape.startswith("opener"):
        sentences.append(rng.choice(_REVIEW_OPENERS[tone]))
    names_product = any("{this_item}" in sentence or "{noun}" in sentence for sentence in sentences)
    aspect_sentences = _REVIEW_ASPECT_SENTENCES if names_product else _REVIEW_PRODUCT_ASPECT_SENTENCES
    sentences.append(rng.choice(aspect_sentences[tone]))
    if shape.endswith("closer"):
        sentences.append(rng.choice(closers))
    text = " ".join(_capitalise(sentence.format(**fill)) for sentence in sentences)
    while len(text) > _MAX_REVIEW_CHARS and len(sentences) > 1:
        sentences.pop()
        text = " ".join(_capitalise(sentence.format(**fill)) for sentence in sentences)
    return text


# --------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------


def _event_row(index: int, event: _Event) -> dict:
    row: dict = {
        C.COL_EVENT_ID: f"e-{index:06d}",
        C.COL_USER_ID: _user_id(event.user_index),
        C.COL_ITEM_ID: event.item_id,
        C.COL_EVENT_TYPE: event.event_type,
        C.COL_TS: _iso(event.ts),
    }
    if event.text is not None:
        row[C.COL_TEXT] = event.text
    if event.rating is not None:
        row[C.COL_RATING] = event.rating
    return row


def _review_row(index: int, review: _Review) -> dict:
    return {
        C.COL_REVIEW_ID: f"r-{index:05d}",
        C.COL_USER_ID: _user_id(review.user_index),
        C.COL_ITEM_ID: review.item_id,
        C.COL_RATING: review.rating,
        C.COL_TEXT: review.text,
        C.COL_TS: review.ts,
    }


def _user_id(user_index: int) -> str:
    return f"u-{user_index + 1:04d}"


def _split_index(n_events: int) -> int:
    if n_events < 2:
        return n_events
    return max(1, min(n_events - 1, round(n_events * _FIRST_EVENTS_FILE_SHARE)))


def _iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _capitalise(sentence: str) -> str:
    return sentence[:1].upper() + sentence[1:]


def review_sentences() -> list[str]:
    """Every review sentence template of the sample, filled with plain words.

    For benchmarks that need realistic English review text of any length.
    """
    fill = {"this_item": "this guitar", "subj": "it", "have": "has", "be": "is", "obj": "it", "noun": "amplifier",
            "brand": "Fender", "use": "daily practice", "use2": "beginners", "duration": "about a month",
            "aspect": "the build quality"}
    templates = [
        sentence
        for pool in (_REVIEW_OPENERS, _REVIEW_ASPECT_SENTENCES, _REVIEW_PRODUCT_ASPECT_SENTENCES, _REVIEW_CLOSERS)
        for sentences in pool.values()
        for sentence in sentences
    ]
    return [re.sub(r"\{(\w+)\}", lambda m: fill.get(m.group(1), "it"), t) for t in templates]
