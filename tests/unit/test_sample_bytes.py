"""The sample generator's output, pinned byte for byte.

The sha256 values below were recorded from the ORIGINAL code, before the vocabulary moved
out of ``datasets/sample.py`` into the package data file ``sample_vocabulary.json``
(issue 25): commit e8a7478 on main, generated with exactly these arguments. The move was
meant to change no byte of the demo's, the tests' and the benchmarks' input, and these
tests hold every later change to the same promise: a change that alters the sample on
purpose records new values here and says why in its commit.

The gzipped events file is hashed as written: ``write_jsonl`` fixes the gzip header
(mtime 0, no name) and the compression level, so its bytes follow from the rows.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from pathlib import Path

import pytest

from interestlake.datasets.sample import generate_sample, review_sentences

ITEMS = "items/items-0001.jsonl"
EVENTS_GZ = "events/events-0001.jsonl.gz"
EVENTS = "events/events-0002.jsonl"
REVIEWS = "reviews/reviews-0001.jsonl"

# name -> (generate_sample keyword arguments, (users, items, events, reviews), sha256 per file)
CASES = {
    # The defaults: what `interestlake generate-sample` and `make demo` write with conf/local.yaml.
    "default": (
        {},
        (300, 300, 12557, 564),
        {
            ITEMS: "c35ddf405c1791f6f625e62244fa6656fa2354d1d356c7e5837e48038d1d032a",
            EVENTS_GZ: "493697000cf0642b062b224f23706d49484a8f7a39256bd8936a696fe8ae8223",
            EVENTS: "1f5e3aea3b5987e5fcbe41d95e379c396b1d7415da35776212fa24d13e70fc47",
            REVIEWS: "8bd0c2e7fb38abc82e503955b109adca4f1ad86fb8cafb545ac1c3e272eef02c",
        },
    ),
    "seed 7, small": (
        {"seed": 7, "n_users": 30, "n_items": 40, "days": 14},
        (30, 40, 899, 33),
        {
            ITEMS: "da3a7c34107bc8c1d3c8fd256636ee89114516c824bf8a5e122be45a90dcadee",
            EVENTS_GZ: "32b8630b07175a8aa5430d49e2735ce8b9f1dbc8dc14bd6b3e31d1ac67505a83",
            EVENTS: "260124d28df772853f267ecfc383197c90fd81714b55b90ccf664a19fe95e790",
            REVIEWS: "a02bf12f2e869efa5254f1fc283e7847b8b73f271d848c70e163a1e6f0c3b42a",
        },
    ),
    "seed 2024, other end time": (
        {
            "seed": 2024,
            "n_users": 120,
            "n_items": 500,
            "days": 30,
            "end_time": datetime(2025, 3, 9, 17, 45, 12, tzinfo=timezone.utc),
        },
        (120, 500, 5052, 241),
        {
            ITEMS: "fffcb11aa5b6129c0e39407075ff297afef7dd95a352d72a0e85eec406327a3c",
            EVENTS_GZ: "bca49e9ad3306b782174a28a45917d67c5021947da53047f184f656c37cdf35c",
            EVENTS: "b8dcff7e338940f670612ba733e7c2f2485e8314c93d26d8a64b485c364d67da",
            REVIEWS: "64a01797108dd46267b1c8b656a7fb1670ead2f43da6a23abbcf3d7544d12ddb",
        },
    ),
    # The smallest sample allowed: one user, one item per category, one day (no reviews).
    "seed 0, minimum": (
        {"seed": 0, "n_users": 1, "n_items": 8, "days": 1},
        (1, 8, 7, 0),
        {
            ITEMS: "ebdbdd5ec4e21e72752cfe26099247c678be194f2549fa049c6392160c22917a",
            EVENTS_GZ: "1b82005c760f3ca9d11dbc3515c4bfddf49ef1356eea6a2c4f9b616833aa366c",
            EVENTS: "b354e721c878c9d1c19311b3d42b06eb160134a4c016909378f7a0d77b14069c",
            REVIEWS: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        },
    ),
    # A catalogue large enough to run out of title combinations ("(2019 Edition)" titles).
    "seed 99, large catalogue": (
        {"seed": 99, "n_users": 20, "n_items": 2500, "days": 5},
        (20, 2500, 1503, 76),
        {
            ITEMS: "daa1bf7c2443ff9bda7afe92ea66393f1ecc1ce7f30af72c7005f5a9a7d49202",
            EVENTS_GZ: "e46c53f90ddabe71cb9299d758d55f41cac65a8bfa384c8c4829eb0344f7001e",
            EVENTS: "7fec89f35caaf7d931c2c1a93e0b4b4f3d611f4cad78fc8a5598eb3080d4cd34",
            REVIEWS: "1e3bcef579e8c29aada215aaea3b57ac8de8eebd6b5a9d64feaff1882edec2d3",
        },
    ),
}

# sha256 of "\n".join(review_sentences()), the encode benchmark's text source.
REVIEW_SENTENCES_SHA256 = "fd11fb652ea7eb5bc32f32535ca8eb9fa32396d8d131935e5a1bea5a34bd66c8"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("name", list(CASES))
def test_sample_files_are_byte_identical_to_the_recorded_ones(tmp_path: Path, name: str) -> None:
    kwargs, counts, expected = CASES[name]
    summary = generate_sample(tmp_path / "landing", **kwargs)
    written = {path.relative_to(tmp_path / "landing").as_posix(): path for path in (tmp_path / "landing").rglob("*")
               if path.is_file()}
    assert sorted(written) == sorted(expected), "the generator writes other files than before"
    assert {key: _sha256(written[key]) for key in expected} == expected
    assert (summary.users, summary.items, summary.events, summary.reviews) == counts


def test_review_sentences_are_unchanged() -> None:
    text = "\n".join(review_sentences())
    assert hashlib.sha256(text.encode("utf-8")).hexdigest() == REVIEW_SENTENCES_SHA256
