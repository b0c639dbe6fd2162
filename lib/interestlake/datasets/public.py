"""Adapters for public recommendation datasets: MovieLens and Amazon reviews.

Each adapter maps the lines of a dataset's files to landing records (DESIGN.md
section 4) one for one, so a landing file written from a source file keeps its
line numbers and a bad line is quarantined by ``ingest`` under the line it had.
The same records feed the evaluation harness, validated in process by the rules
``ingest`` applies (``interestlake.datasets.validation``).

Supported layouts:
- MovieLens ``ml-latest``/``ml-latest-small``: ``ratings.csv``, ``movies.csv`` and
  optional ``tags.csv`` (each optionally ``.gz``). Ratings become ``rate`` events,
  titles and genres become items, tags become reviews (user-written text).
- MovieLens 100K: ``u.data`` (tab-separated ratings) and ``u.item`` (``|``-separated,
  Latin-1, 19 genre flags; genre names from ``u.genre`` when present).
- Amazon review JSON Lines, 2014 (``reviewerID``, ``asin``, ``overall``, ``reviewText``,
  ``summary``, ``unixReviewTime``) and 2018 (the same plus ``vote``, ``style``,
  ``verified``; duplicate lines collapse on their review id). Each review becomes a
  review and a ``purchase`` event. Item metadata (``meta_*.json[.gz]``, JSON or the
  2014 Python-literal lines) is optional; without it an item's text is built from
  reviews (``items_from_reviews``), and the evaluation builds it from training
  reviews only.
"""

from __future__ import annotations

import ast
import csv
import gzip
import hashlib
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from interestlake import constants as C
from interestlake.datasets import validation as V
from interestlake.datasets.landing import write_jsonl

MOVIELENS = "movielens"
AMAZON_REVIEWS = "amazon-reviews"
DATASETS = (MOVIELENS, AMAZON_REVIEWS)

# MovieLens 100K's genre flags, in u.item's column order (u.genre says the same).
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)
# Review text kept per review in an item text built from reviews, and the cap of the whole text
# (the encoder reads at most encoder.max_seq_length tokens of it anyway).
REVIEW_SNIPPET_CHARS = 200
ITEM_TEXT_CHARS = 1000


class DatasetError(ValueError):
    """A dataset path does not hold a supported layout."""


@dataclass(frozen=True)
class SourceLine:
    """One line of a dataset file mapped to a landing record of one kind.

    ``record`` is None when the line could not be parsed at all; ``raw`` then
    holds the line, which a landing file carries as is so ``ingest`` quarantines it.
    """

    kind: str
    source: str
    row_no: int
    record: dict[str, Any] | None
    raw: str | None = None


@dataclass
class PublicDataset:
    """A dataset read into table-shaped frames, validated like ``ingest`` validates.

    Attributes:
        name: ``movielens`` or ``amazon-reviews``.
        events: Accepted events (columns of the ``events`` table, ``ts`` UTC).
        reviews: Accepted reviews (columns of the ``reviews`` table).
        items: Accepted catalog rows, or None when the dataset has no item metadata.
        rejected: Lines that would be quarantined: kind, source, row_no, reason, detail, raw.
        duplicates: Per kind, rows dropped because an earlier row had the same key.
    """

    name: str
    events: pd.DataFrame
    reviews: pd.DataFrame
    items: pd.DataFrame | None
    rejected: pd.DataFrame
    duplicates: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, int]:
        """Row counts, for logs and MLflow parameters."""
        out = {
            "events": len(self.events),
            "reviews": len(self.reviews),
            "items": 0 if self.items is None else len(self.items),
            "users": self.events[C.COL_USER_ID].nunique(),
            "rejected": len(self.rejected),
        }
        out.update({f"{kind}_duplicates": n for kind, n in self.duplicates.items()})
        return out


# -- reading files ------------------------------------------------------------------


def _find(folder: Path, *names: str) -> Path | None:
    for name in names:
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def _read_text(path: Path, encoding: str = "utf-8") -> str:
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        data = gzip.decompress(data)
    return data.decode(encoding, errors="replace")


def _lines(path: Path, encoding: str = "utf-8") -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its line ending); CRLF files included."""
    for row_no, line in enumerate(_read_text(path, encoding).splitlines(), start=1):
        yield row_no, line


def _csv_rows(path: Path) -> Iterator[tuple[int, dict[str, str | None]]]:
    """Data rows of a CSV file with a header, numbered by their line in the file."""
    lines = list(_lines(path))
    if not lines:
        return
    header = next(csv.reader([lines[0][1]]))
    for row_no, line in lines[1:]:
        if not line.strip():
            continue
        values = next(csv.reader(io.StringIO(line)), [])
        row: dict[str, str | None] = dict(zip(header, values))
        for name in header[len(values):]:
            row[name] = None
        yield row_no, row


def _epoch(value: Any) -> Any:
    """Epoch seconds as an int when the text is one; anything else is left for validation."""
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return value


def _number(value: Any) -> Any:
    try:
        return float(str(value).strip())
    except (TypeError, ValueError):
        return value


def _present(record: dict[str, Any]) -> dict[str, Any]:
    """The record without absent fields, so validation reports them as missing."""
    return {key: value for key, value in record.items() if value is not None}


def _ml_rating(value: Any) -> Any:
    """MovieLens rates 0.5..5 in half stars; the landing contract is 1..5, so 0.5 counts as 1."""
    rating = _number(value)
    return max(rating, float(C.RATING_MIN)) if isinstance(rating, float) and 0 < rating < C.RATING_MIN else rating


# -- MovieLens ----------------------------------------------------------------------


def movielens_lines(path: str | Path) -> Iterator[SourceLine]:
    """Landing records of a MovieLens folder, ``ml-latest`` CSV or the 100K ``u.data`` layout.

    Raises:
        DatasetError: When the folder holds neither layout.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise DatasetError(f"{folder}: not a folder; pass the MovieLens folder (with ratings.csv or u.data)")
    ratings_csv = _find(folder, "ratings.csv")
    if ratings_csv is not None:
        yield from _movielens_latest(folder, ratings_csv)
        return
    u_data = _find(folder, "u.data")
    if u_data is not None:
        yield from _movielens_100k(folder, u_data)
        return
    raise DatasetError(
        f"{folder}: no MovieLens files found; expected ratings.csv and movies.csv (ml-latest, "
        "optionally .gz) or u.data and u.item (ml-100k)"
    )


def _movielens_latest(folder: Path, ratings_csv: Path) -> Iterator[SourceLine]:
    movies_csv = _find(folder, "movies.csv")
    if movies_csv is None:
        raise DatasetError(f"{folder}: ratings.csv without movies.csv; both are needed (titles are the item text)")
    ratings: dict[tuple[str, str], Any] = {}
    for row_no, row in _csv_rows(ratings_csv):
        user, movie = row.get("userId"), row.get("movieId")
        rating = _ml_rating(row.get("rating"))
        ratings[(str(user), str(movie))] = rating
        yield SourceLine(C.EVENTS, str(ratings_csv), row_no, _present({
            C.COL_EVENT_ID: f"rating:{user}:{movie}", C.COL_USER_ID: user, C.COL_ITEM_ID: movie,
            C.COL_EVENT_TYPE: C.EVENT_RATE, C.COL_RATING: rating, C.COL_TS: _epoch(row.get("timestamp")),
        }))
    for row_no, row in _csv_rows(movies_csv):
        genres = row.get("genres")
        category = None if not genres or genres == "(no genres listed)" else genres.replace("|", ", ")
        yield SourceLine(C.ITEMS, str(movies_csv), row_no, _present({
            C.COL_ITEM_ID: row.get("movieId"), C.COL_TITLE: row.get("title"), C.COL_CATEGORY: category,
        }))
    tags_csv = _find(folder, "tags.csv")
    if tags_csv is None:
        return
    for row_no, row in _csv_rows(tags_csv):
        user, movie, tag, ts = row.get("userId"), row.get("movieId"), row.get("tag"), row.get("timestamp")
        digest = hashlib.sha1(str(tag).encode("utf-8")).hexdigest()[:10]
        # A review needs a rating: the user's rating of the movie. Tags on movies the
        # user never rated have none and are quarantined (missing_field) like any such review.
        record = _present({
            C.COL_REVIEW_ID: f"tag:{user}:{movie}:{ts}:{digest}", C.COL_USER_ID: user, C.COL_ITEM_ID: movie,
            C.COL_TEXT: tag, C.COL_TS: _epoch(ts),
        })
        if (str(user), str(movie)) in ratings:
            record[C.COL_RATING] = ratings[(str(user), str(movie))]
        yield SourceLine(C.REVIEWS, str(tags_csv), row_no, record)


def _movielens_100k(folder: Path, u_data: Path) -> Iterator[SourceLine]:
    u_item = _find(folder, "u.item")
    if u_item is None:
        raise DatasetError(f"{folder}: u.data without u.item; both are needed (titles are the item text)")
    for row_no, line in _lines(u_data):
        if not line.strip():
            continue
        fields = line.split("\t")
        user, movie, rating, ts = (fields + [None] * 4)[:4]
        yield SourceLine(C.EVENTS, str(u_data), row_no, _present({
            C.COL_EVENT_ID: f"rating:{user}:{movie}", C.COL_USER_ID: user, C.COL_ITEM_ID: movie,
            C.COL_EVENT_TYPE: C.EVENT_RATE, C.COL_RATING: _ml_rating(rating), C.COL_TS: _epoch(ts),
        }))
    genres = list(ML100K_GENRES)
    u_genre = _find(folder, "u.genre")
    if u_genre is not None:
        named = [line.split("|") for _, line in _lines(u_genre, "latin-1") if "|" in line]
        genres = [name for name, _ in sorted(named, key=lambda pair: int(pair[1]))] or genres
    for row_no, line in _lines(u_item, "latin-1"):
        if not line.strip():
            continue
        fields = line.split("|")
        flags = fields[5:]
        category = ", ".join(g for g, flag in zip(genres, flags) if flag.strip() == "1" and g != "unknown")
        yield SourceLine(C.ITEMS, str(u_item), row_no, _present({
            C.COL_ITEM_ID: fields[0], C.COL_TITLE: fields[1] if len(fields) > 1 else None,
            C.COL_CATEGORY: category or None,
        }))


# -- Amazon reviews -----------------------------------------------------------------


def amazon_files(path: str | Path) -> tuple[Path, Path | None]:
    """(reviews file, metadata file or None) of an Amazon reviews path (a file or a folder)."""
    path = Path(path)
    if path.is_file():
        return path, None
    if not path.is_dir():
        raise DatasetError(f"{path}: no such file or folder")
    candidates = sorted(
        p for p in path.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.name.lower().removesuffix(".gz").endswith((".json", ".jsonl"))
    )
    meta = [p for p in candidates if p.name.lower().startswith("meta")]
    reviews = [p for p in candidates if not p.name.lower().startswith("meta")]
    if len(reviews) != 1 or len(meta) > 1:
        raise DatasetError(
            f"{path}: expected one reviews file (*.json[l][.gz]) and at most one meta_*.json[.gz], "
            f"found reviews {[p.name for p in reviews]} and metadata {[p.name for p in meta]}; pass the reviews file itself"
        )
    return reviews[0], (meta[0] if meta else None)


def amazon_review_lines(path: str | Path) -> Iterator[SourceLine]:
    """Landing records of Amazon review JSON Lines (2014 or 2018 field set), plus metadata items when present.

    Every review line yields a review and a ``purchase`` event with the same line number.
    """
    reviews_file, meta_file = amazon_files(path)
    for row_no, line in _lines(reviews_file):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            for kind in (C.REVIEWS, C.EVENTS):
                yield SourceLine(kind, str(reviews_file), row_no, None, line)
            continue
        user, item, ts = doc.get("reviewerID"), doc.get("asin"), doc.get("unixReviewTime")
        review_id = f"{user}:{item}:{ts}"
        text = ". ".join(
            part.strip() for part in (doc.get("summary"), doc.get("reviewText")) if isinstance(part, str) and part.strip()
        )
        yield SourceLine(C.REVIEWS, str(reviews_file), row_no, {
            C.COL_REVIEW_ID: review_id, C.COL_USER_ID: user, C.COL_ITEM_ID: item,
            C.COL_RATING: doc.get("overall"), C.COL_TEXT: text or None, C.COL_TS: ts,
        })
        yield SourceLine(C.EVENTS, str(reviews_file), row_no, {
            C.COL_EVENT_ID: f"purchase:{review_id}", C.COL_USER_ID: user, C.COL_ITEM_ID: item,
            C.COL_EVENT_TYPE: C.EVENT_PURCHASE, C.COL_TS: ts,
        })
    if meta_file is not None:
        yield from _amazon_metadata(meta_file)


def _amazon_metadata(meta_file: Path) -> Iterator[SourceLine]:
    for row_no, line in _lines(meta_file):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
        except ValueError:
            # The 2014 metadata files hold Python literals, not JSON.
            try:
                doc = ast.literal_eval(line)
            except (ValueError, SyntaxError):
                doc = None
        if not isinstance(doc, dict):
            yield SourceLine(C.ITEMS, str(meta_file), row_no, None, line)
            continue
        categories = doc.get("category") or doc.get("categories") or []
        flat = [c for group in categories for c in (group if isinstance(group, list) else [group]) if isinstance(c, str)]
        description = doc.get("description")
        if isinstance(description, list):
            description = " ".join(d for d in description if isinstance(d, str))
        price = doc.get("price")
        if isinstance(price, str):
            price = _number(price.strip().lstrip("$").replace(",", "")) if price.strip() else None
            price = price if isinstance(price, float) else None
        yield SourceLine(C.ITEMS, str(meta_file), row_no, {
            C.COL_ITEM_ID: doc.get("asin"), C.COL_TITLE: doc.get("title"), C.COL_DESCRIPTION: description or None,
            C.COL_CATEGORY: " > ".join(dict.fromkeys(flat)) or None, C.COL_PRICE: price,
        })


def items_from_reviews(
    reviews: pd.DataFrame, snippet_chars: int = REVIEW_SNIPPET_CHARS, max_chars: int = ITEM_TEXT_CHARS
) -> pd.DataFrame:
    """Catalog rows for items without metadata, built from the given reviews only.

    The title is the item id (no better name exists); the description joins the
    start of each review's text, oldest first, up to ``max_chars``. Pass training
    reviews only when evaluating: an item text from test-period reviews would leak.

    Args:
        reviews: Rows with item_id, ts and text.
        snippet_chars: Characters kept from each review.
        max_chars: Cap of the whole description.

    Returns:
        item_id, title, description, category, price, updated_at (the newest review's time).
    """
    missing = {C.COL_ITEM_ID, C.COL_TS, C.COL_TEXT} - set(reviews.columns)
    if missing:
        raise ValueError(f"items_from_reviews: reviews lack column(s) {sorted(missing)}")
    ordered = reviews.sort_values([C.COL_ITEM_ID, C.COL_TS], kind="stable")
    snippets = ordered[C.COL_TEXT].fillna("").astype(str).str.strip().str.slice(0, snippet_chars)
    grouped = snippets[snippets.str.len() > 0].groupby(ordered[C.COL_ITEM_ID], sort=True)
    described = grouped.agg(lambda texts: " | ".join(texts)[:max_chars])
    updated = ordered.groupby(C.COL_ITEM_ID, sort=True)[C.COL_TS].max()
    items = pd.DataFrame({C.COL_ITEM_ID: updated.index.astype(str)})
    items[C.COL_TITLE] = items[C.COL_ITEM_ID]
    items[C.COL_DESCRIPTION] = items[C.COL_ITEM_ID].map(described).where(lambda d: d.notna(), None)
    items[C.COL_CATEGORY] = None
    items[C.COL_PRICE] = None
    items[C.COL_UPDATED_AT] = updated.to_numpy()
    return items


# -- one entry point per dataset ------------------------------------------------------


def dataset_lines(name: str, path: str | Path) -> Iterator[SourceLine]:
    """Landing records of a supported dataset (``movielens`` or ``amazon-reviews``)."""
    if name == MOVIELENS:
        return movielens_lines(path)
    if name == AMAZON_REVIEWS:
        return amazon_review_lines(path)
    raise DatasetError(f"unknown dataset {name!r}; supported: {list(DATASETS)}")


def load_dataset(name: str, path: str | Path) -> PublicDataset:
    """Reads a dataset into validated frames, with the rules and key deduplication of ``ingest``.

    Rows failing validation are returned in ``rejected`` (what ``ingest`` would
    quarantine); for keys seen twice the first row wins, as in ``ingest``.
    """
    accepted: dict[str, list[dict]] = {C.EVENTS: [], C.REVIEWS: [], C.ITEMS: []}
    rejected: list[dict] = []
    has_items = False
    for line in dataset_lines(name, path):
        has_items |= line.kind == C.ITEMS
        result = V.validate_record(line.kind, line.record) if line.record is not None else V.Rejection(
            V.INVALID_JSON, "line is not a JSON object"
        )
        if isinstance(result, V.Rejection):
            raw = line.raw if line.raw is not None else json.dumps(line.record, ensure_ascii=False, default=str)
            rejected.append({"kind": line.kind, "source": line.source, "row_no": line.row_no,
                             "reason": result.reason, "detail": result.detail, "raw": raw[: 4096]})
        else:
            accepted[line.kind].append(result)
    frames, duplicates = {}, {}
    for kind, rows in accepted.items():
        frame = _typed_frame(kind, rows)
        key = {C.EVENTS: C.COL_EVENT_ID, C.REVIEWS: C.COL_REVIEW_ID, C.ITEMS: C.COL_ITEM_ID}[kind]
        # ingest keeps the newest catalog row per item and the first row of every other key.
        keep = "last" if kind == C.ITEMS else "first"
        deduped = frame.drop_duplicates(key, keep=keep).reset_index(drop=True)
        duplicates[kind] = len(frame) - len(deduped)
        frames[kind] = deduped
    return PublicDataset(
        name, frames[C.EVENTS], frames[C.REVIEWS], frames[C.ITEMS] if has_items else None,
        pd.DataFrame(rejected, columns=["kind", "source", "row_no", "reason", "detail", "raw"]), duplicates,
    )


def _typed_frame(kind: str, rows: list[dict]) -> pd.DataFrame:
    from interestlake.lake.schemas import table_spec

    columns = [f.name for f in table_spec(kind).schema.fields if f.name not in ("source", C.COL_RUN_ID, "ingested_at")]
    frame = pd.DataFrame(rows, columns=columns)
    for column in (C.COL_TS, C.COL_UPDATED_AT):
        if column in frame:
            # validate_record returns naive UTC datetimes; keep them explicitly UTC.
            frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame


def write_landing(name: str, path: str | Path, landing_dir: str | Path) -> dict[str, Any]:
    """Writes a dataset as landing files, one per source file and kind, line numbers kept.

    Files are named ``<dataset>-<source file>.jsonl.gz`` under ``<landing>/<kind>/``;
    writing the same dataset again rewrites identical files (ingest takes a path
    once). For Amazon reviews without metadata an items file is built from all
    the reviews (``items_from_reviews``).

    Returns:
        ``{"files": [...], "rows": {kind: n}}``.
    """
    landing = Path(landing_dir)
    per_file: dict[tuple[str, str], list[tuple[int, dict | str]]] = {}
    has_items = False
    for line in dataset_lines(name, path):
        has_items |= line.kind == C.ITEMS
        per_file.setdefault((line.kind, line.source), []).append((line.row_no, line.record if line.record is not None else line.raw))
    files, counts = [], {C.EVENTS: 0, C.REVIEWS: 0, C.ITEMS: 0}
    for (kind, source), rows in sorted(per_file.items()):
        stem = Path(source).name.removesuffix(".gz").rsplit(".", 1)[0]
        target = landing / kind / f"{name}-{stem}.jsonl.gz"
        write_jsonl(target, _numbered(rows))
        files.append(str(target))
        counts[kind] += len(rows)
    if not has_items and name == AMAZON_REVIEWS:
        reviews = load_dataset(name, path).reviews
        items = items_from_reviews(reviews)
        items[C.COL_UPDATED_AT] = items[C.COL_UPDATED_AT].map(lambda ts: ts.isoformat())
        target = landing / C.ITEMS / f"{name}-{Path(amazon_files(path)[0]).name.split('.')[0]}-items-from-reviews.jsonl.gz"
        write_jsonl(target, [{k: v for k, v in row.items() if v is not None} for row in items.to_dict("records")])
        files.append(str(target))
        counts[C.ITEMS] += len(items)
    return {"files": files, "rows": counts}


def _numbered(rows: Iterable[tuple[int, dict | str]]) -> Iterator[dict | str | None]:
    """Rows placed at their source line numbers, empty lines in between (ingest skips them)."""
    line = 0
    for row_no, row in sorted(rows, key=lambda pair: pair[0]):
        while line < row_no - 1:
            line += 1
            yield None
        line += 1
        yield row
