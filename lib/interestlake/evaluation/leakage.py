"""The leakage guard: nothing from after the split point may reach what the methods learn from.

``check_no_leakage`` runs in every evaluation, before any method is fitted,
and raises ``LeakageError`` naming what leaked. It checks the training
interactions (what popularity, item-kNN and ALS count), the events and reviews
handed to our pipeline, and the item texts it encodes.
"""

from __future__ import annotations

import pandas as pd

from interestlake import constants as C
from interestlake.evaluation.protocols import Split


class LeakageError(RuntimeError):
    """Test-period data reached the training side of an evaluation."""


def check_no_leakage(
    split: Split,
    events: pd.DataFrame,
    reviews: pd.DataFrame,
    items: pd.DataFrame,
    test_texts: pd.Series | None = None,
) -> None:
    """Raises ``LeakageError`` when test-period data is on the training side.

    Args:
        split: The split (its ``train`` is what the baselines count).
        events: Events given to our pipeline.
        reviews: Reviews given to our pipeline.
        items: Catalog rows given to our pipeline (their texts are encoded).
        test_texts: Texts written in the test period (e.g. test reviews); none of
            them may appear inside an item's text (unless a training review starts
            the same way). Pass them when item texts are built from reviews; catalog
            metadata may repeat a user's words legitimately.
    """
    test_pairs = _pairs(split.test)
    problems = []
    for name, frame in (("training interactions", split.train), ("pipeline events", events), ("pipeline reviews", reviews)):
        leaked = _pairs(frame) & test_pairs
        if leaked:
            problems.append(f"{name} hold {len(leaked)} test (user, item) pair(s), e.g. {sorted(leaked)[:3]}")
        late = _after_user_cut(frame, split)
        if late:
            problems.append(f"{name} hold {late} row(s) written after their user's last training interaction")
    if split.protocol == "temporal":
        cut = pd.Timestamp(split.params["cut"])
        for name, frame in (("training interactions", split.train), ("pipeline events", events), ("pipeline reviews", reviews)):
            if len(frame) and (frame[C.COL_TS] >= cut).any():
                problems.append(f"{name} hold rows at or after the temporal cut {cut.isoformat()}")
    if test_texts is not None and len(items):
        corpus = (
            items[C.COL_TITLE].fillna("") + " " + items.get(C.COL_DESCRIPTION, pd.Series("", index=items.index)).fillna("")
        )
        # A test text that some training review also starts with may be in an item text legitimately.
        allowed = {t[:60] for t in reviews.get(C.COL_TEXT, pd.Series(dtype=object)).dropna().astype(str)}
        snippets = [t[:60] for t in test_texts.dropna().astype(str) if len(t.strip()) >= 20 and t[:60] not in allowed]
        found = [s for s in snippets if corpus.str.contains(s, regex=False).any()]
        if found:
            problems.append(f"item texts contain {len(found)} test-period text(s), e.g. {found[:1]}")
    if problems:
        raise LeakageError("test-period data on the training side: " + "; ".join(problems))


def _pairs(frame: pd.DataFrame) -> set[tuple[str, str]]:
    rows = frame[frame[C.COL_ITEM_ID].notna()]
    return set(zip(rows[C.COL_USER_ID], rows[C.COL_ITEM_ID]))


def _after_user_cut(frame: pd.DataFrame, split: Split) -> int:
    """Rows of test users written after that user's last training interaction."""
    if frame is split.train or not len(frame):
        return 0
    last = split.train.groupby(C.COL_USER_ID)[C.COL_TS].max()
    limit = frame[C.COL_USER_ID].map(last)
    return int(((frame[C.COL_TS] > limit) & limit.notna()).sum())
