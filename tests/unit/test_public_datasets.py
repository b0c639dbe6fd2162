"""Dataset adapters on small hand-written files of every supported layout."""

import gzip
import json

import pandas as pd
import pytest

from interestlake import constants as C
from interestlake.datasets.landing import read_records
from interestlake.datasets.public import DatasetError, items_from_reviews, load_dataset, write_landing

RATINGS = "userId,movieId,rating,timestamp\r\n1,10,4.0,964982703\r\n1,20,0.5,964982800\r\n2,10,oops,964982900\r\n2,30,3.5,964983000\r\n"
MOVIES = 'movieId,title,genres\r\n10,"Heat, the Movie (1995)",Action|Crime\r\n20,Toy Story (1995),(no genres listed)\r\n30,Up (2009),Animation\r\n'
TAGS = "userId,movieId,tag,timestamp\r\n1,10,slow burn,964983100\r\n2,20,never rated,964983200\r\n"


def write(path, text, gz=False, encoding="utf-8"):
    data = text.encode(encoding)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


@pytest.mark.parametrize("gz", [False, True])
def test_movielens_latest_csv(tmp_path, gz):
    suffix = ".gz" if gz else ""
    write(tmp_path / f"ratings.csv{suffix}", RATINGS, gz)
    write(tmp_path / f"movies.csv{suffix}", MOVIES, gz)
    write(tmp_path / f"tags.csv{suffix}", TAGS, gz)
    data = load_dataset("movielens", tmp_path)

    events = data.events.set_index(C.COL_EVENT_ID)
    assert list(events.index) == ["rating:1:10", "rating:1:20", "rating:2:30"]
    assert (events[C.COL_EVENT_TYPE] == "rate").all()
    # Half a star is below the landing contract's 1..5: it counts as 1.
    assert events.loc["rating:1:20", C.COL_RATING] == 1.0
    assert events.loc["rating:1:10", C.COL_TS] == pd.Timestamp(964982703, unit="s", tz="UTC")
    items = data.items.set_index(C.COL_ITEM_ID)
    assert items.loc["10", C.COL_TITLE] == "Heat, the Movie (1995)"
    assert items.loc["10", C.COL_CATEGORY] == "Action, Crime"
    assert items.loc["20", C.COL_CATEGORY] is None
    # The tag on a rated movie is a review with the user's rating; the other has none.
    assert data.reviews[[C.COL_USER_ID, C.COL_ITEM_ID, C.COL_TEXT, C.COL_RATING]].values.tolist() == [
        ["1", "10", "slow burn", 4.0]
    ]
    rejected = data.rejected.set_index(["kind", "row_no"])
    assert rejected.loc[("events", 4), "reason"] == "invalid_rating"  # line 4 of ratings.csv
    assert rejected.loc[("reviews", 3), "reason"] == "missing_field"
    assert len(rejected) == 2


def test_movielens_100k_layout(tmp_path):
    write(tmp_path / "u.data", "1\t10\t5\t881250949\n2\t10\t3\t891717742\n3\tx\n")
    flags = ["0"] * 19
    flags[1], flags[5] = "1", "1"  # Action, Comedy
    write(tmp_path / "u.item", f"10|Amélie (2001)|01-Jan-2001||http://x|{'|'.join(flags)}\n", encoding="latin-1")
    data = load_dataset("movielens", tmp_path)
    assert len(data.events) == 2 and data.events[C.COL_RATING].tolist() == [5.0, 3.0]
    item = data.items.iloc[0]
    assert item[C.COL_TITLE] == "Amélie (2001)"
    assert item[C.COL_CATEGORY] == "Action, Comedy"
    assert data.rejected[["kind", "row_no", "reason"]].values.tolist() == [["events", 3, "missing_field"]]


def test_movielens_folder_without_files_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="ratings.csv and movies.csv"):
        load_dataset("movielens", tmp_path)


REVIEW_2014 = {"reviewerID": "A1", "asin": "B1", "reviewerName": "x", "helpful": [0, 0], "overall": 5.0,
               "reviewText": "Great strings, bright tone.", "summary": "Love them", "unixReviewTime": 1393545600,
               "reviewTime": "02 28, 2014"}
REVIEW_2018 = {"overall": 4.0, "vote": "3", "verified": True, "reviewTime": "01 2, 2018", "reviewerID": "A2",
               "asin": "B1", "style": {"Size:": " Medium"}, "reviewText": "Works.", "summary": "Fine",
               "unixReviewTime": 1514851200}


@pytest.mark.parametrize("review", [REVIEW_2014, REVIEW_2018], ids=["2014", "2018"])
def test_amazon_reviews_both_field_sets(tmp_path, review):
    lines = [json.dumps(review), json.dumps(review), "{not json", json.dumps({**review, "overall": 9})]
    path = write(tmp_path / "reviews_X_5.json.gz", "\n".join(lines) + "\n", gz=True)
    data = load_dataset("amazon-reviews", path)
    assert data.items is None  # no metadata
    assert len(data.reviews) == 1 and len(data.events) == 1
    row = data.reviews.iloc[0]
    assert row[C.COL_TEXT] == f"{review['summary']}. {review['reviewText']}"
    assert row[C.COL_RATING] == review["overall"]
    assert data.events.iloc[0][C.COL_EVENT_TYPE] == "purchase"
    # The repeated line, and the event of line 4 (its review is rejected, its purchase is the same as line 1).
    assert data.duplicates == {"events": 2, "reviews": 1, "items": 0}
    reasons = sorted(map(tuple, data.rejected[["kind", "row_no", "reason"]].values.tolist()))
    assert reasons == [("events", 3, "invalid_json"), ("reviews", 3, "invalid_json"), ("reviews", 4, "invalid_rating")]


def test_amazon_metadata_in_2014_python_literal_form(tmp_path):
    write(tmp_path / "reviews_X_5.json", json.dumps(REVIEW_2014) + "\n")
    write(tmp_path / "meta_X.json", "{'asin': 'B1', 'title': 'Nickel Strings', 'price': 4.5, "
                                    "'categories': [['Musical Instruments', 'Strings']]}\n")
    data = load_dataset("amazon-reviews", tmp_path)
    item = data.items.iloc[0]
    assert (item[C.COL_ITEM_ID], item[C.COL_TITLE], item[C.COL_PRICE]) == ("B1", "Nickel Strings", 4.5)
    assert item[C.COL_CATEGORY] == "Musical Instruments > Strings"


def test_items_from_reviews_use_only_the_reviews_given():
    reviews = pd.DataFrame({
        C.COL_ITEM_ID: ["B1", "B1", "B2"], C.COL_TEXT: ["second " * 50, "first", "other"],
        C.COL_TS: pd.to_datetime([2, 1, 1], unit="D", utc=True),
    })
    items = items_from_reviews(reviews, snippet_chars=10, max_chars=15).set_index(C.COL_ITEM_ID)
    # Oldest first, each review cut to 10 characters, the whole to 15.
    assert items.loc["B1", C.COL_DESCRIPTION] == "first | second "
    assert items.loc["B1", C.COL_TITLE] == "B1"
    assert items.loc["B2", C.COL_DESCRIPTION] == "other"


def test_landing_files_keep_source_line_numbers(tmp_path):
    source = tmp_path / "data"
    source.mkdir()
    write(source / "ratings.csv", RATINGS)
    write(source / "movies.csv", MOVIES)
    written = write_landing("movielens", source, tmp_path / "landing")
    events_file = next(f for f in written["files"] if "/events/" in f)
    records = {r.row_no: r.record for r in read_records(events_file)}
    # Line 1 of ratings.csv is the header: the landing file's line 2 is ratings.csv's line 2.
    assert sorted(records) == [2, 3, 4, 5]
    assert records[4][C.COL_RATING] == "oops"  # left for ingest to quarantine under line 4
    assert written["rows"] == {"events": 4, "reviews": 0, "items": 3}
