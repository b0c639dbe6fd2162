"""Evaluation protocols: how interactions are split into training and test parts.

Every protocol takes an interactions frame (one row per user and item: the
first time the user interacted with it) and returns a ``Split``. Only users
with at least one training interaction are test users: nothing can be said
about a user the model never saw.

- ``leave-last-out``: each user's last interaction (ties in time broken by a
  seeded random order) is the test item; users with one interaction only train.
- ``temporal``: one global time cut (a timestamp, or the quantile of all
  interaction times); interactions at or after it are to be predicted.
- ``stratified``: the Microsoft Recommenders protocol (``python_stratified_split``
  with ``filter_by="item"``, as in their MovieLens benchmark): each item's
  interactions in seeded random order, the first 75% (position / count <= ratio)
  train, the rest test; an item with a single interaction goes to test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from interestlake import constants as C

LEAVE_LAST_OUT = "leave-last-out"
TEMPORAL = "temporal"
STRATIFIED = "stratified"
PROTOCOLS = (LEAVE_LAST_OUT, TEMPORAL, STRATIFIED)
INTERACTION_COLUMNS = [C.COL_USER_ID, C.COL_ITEM_ID, C.COL_TS]
# Event types that are an interaction with an item (a search is not).
ITEM_EVENT_TYPES = (C.EVENT_VIEW, C.EVENT_CLICK, C.EVENT_CART, C.EVENT_PURCHASE, C.EVENT_RATE)


@dataclass(frozen=True)
class Split:
    """Training and test interactions of one protocol run.

    Attributes:
        protocol: Protocol name.
        params: Everything that determines the split (seed, ratio, cut...).
        train: Training interactions (user_id, item_id, ts).
        test: Test interactions of users that have training interactions.
    """

    protocol: str
    params: dict[str, Any]
    train: pd.DataFrame
    test: pd.DataFrame
    dropped_test_users: int = field(default=0)

    @property
    def test_users(self) -> np.ndarray:
        """Sorted ids of the users evaluated."""
        return np.sort(self.test[C.COL_USER_ID].unique())


def interactions_from_events(
    events: pd.DataFrame,
    user_col: str = C.COL_USER_ID,
    item_col: str = C.COL_ITEM_ID,
    ts_col: str = C.COL_TS,
    type_col: str = C.COL_EVENT_TYPE,
) -> pd.DataFrame:
    """One row per (user, item): the earliest item event, in input order for equal times.

    A repeat of an item the user already had is not a new thing to predict, so
    only the first occurrence counts.
    """
    _require(events, [user_col, item_col, ts_col, type_col], "events")
    rows = events[events[type_col].isin(ITEM_EVENT_TYPES) & events[item_col].notna()]
    rows = rows[[user_col, item_col, ts_col]].rename(
        columns={user_col: C.COL_USER_ID, item_col: C.COL_ITEM_ID, ts_col: C.COL_TS}
    )
    rows = rows.reset_index(drop=True).sort_values(C.COL_TS, kind="stable")
    return rows.drop_duplicates([C.COL_USER_ID, C.COL_ITEM_ID], keep="first").sort_index().reset_index(drop=True)


def make_split(protocol: str, interactions: pd.DataFrame, seed: int = 42, **params: Any) -> Split:
    """Splits interactions by a named protocol.

    Args:
        protocol: ``leave-last-out``, ``temporal`` or ``stratified``.
        interactions: user_id, item_id, ts (see ``interactions_from_events``).
        seed: Seed of the random tie-breaking (leave-last-out) or ordering (stratified).
        **params: ``ties`` (leave-last-out: ``input`` or ``random``), ``ratio`` and ``by``
            (stratified, default 0.75 and ``item``), ``cut`` (temporal: ISO time or
            ``pd.Timestamp``) or ``quantile`` (temporal, default 0.8).

    Raises:
        ValueError: Unknown protocol, bad parameters, or a split with no test user.
    """
    _require(interactions, INTERACTION_COLUMNS, "interactions")
    if protocol == LEAVE_LAST_OUT:
        split = leave_last_out(interactions, seed=seed, **params)
    elif protocol == TEMPORAL:
        split = temporal(interactions, seed=seed, **params)
    elif protocol == STRATIFIED:
        split = stratified(interactions, seed=seed, **params)
    else:
        raise ValueError(f"unknown protocol {protocol!r}; protocols are {list(PROTOCOLS)}")
    if split.test.empty:
        raise ValueError(f"{protocol} split of {len(interactions)} interactions left no test user with training history")
    return split


def leave_last_out(interactions: pd.DataFrame, seed: int = 42, ties: str = "input") -> Split:
    """Each user's last interaction is the test item (users with >= 2 interactions).

    Args:
        interactions: user_id, item_id, ts.
        seed: Seed of the random tie-breaking when ``ties="random"``.
        ties: Among interactions at the same time (Amazon reviews carry days only),
            ``input`` takes the one that comes last in the input as the last, which is
            what the reference numbers in DESIGN.md used; ``random`` draws with ``seed``.
    """
    if ties not in ("input", "random"):
        raise ValueError(f"leave-last-out: ties must be 'input' or 'random', got {ties!r}")
    ordered = _seeded_order(interactions, seed)
    if ties == "input":
        ordered["_order"] = np.arange(len(ordered))
    ordered = ordered.sort_values([C.COL_USER_ID, C.COL_TS, "_order"], kind="stable")
    is_last = ~ordered.duplicated(C.COL_USER_ID, keep="last")
    counts = ordered.groupby(C.COL_USER_ID)[C.COL_ITEM_ID].transform("size")
    test_mask = is_last & (counts >= 2)
    return _finish(LEAVE_LAST_OUT, {"seed": seed, "ties": ties}, ordered[~test_mask], ordered[test_mask])


def temporal(
    interactions: pd.DataFrame, seed: int = 42, cut: str | pd.Timestamp | None = None, quantile: float = 0.8
) -> Split:
    """Interactions before a global time cut train; those at or after it are test."""
    if cut is None:
        if not 0 < quantile < 1:
            raise ValueError(f"temporal: quantile must be in (0, 1), got {quantile}")
        cut_ts = interactions[C.COL_TS].quantile(quantile)
    else:
        try:
            cut_ts = pd.Timestamp(cut)
        except ValueError:
            raise ValueError(f"temporal: cut {cut!r} is not a time (e.g. 2018-01-01T00:00:00Z)") from None
        cut_ts = cut_ts.tz_localize("UTC") if cut_ts.tzinfo is None else cut_ts.tz_convert("UTC")
    ordered = _seeded_order(interactions, seed)
    before = ordered[C.COL_TS] < cut_ts
    params = {"seed": seed, "cut": cut_ts.isoformat(), "quantile": None if cut is not None else quantile}
    return _finish(TEMPORAL, params, ordered[before], ordered[~before])


def stratified(interactions: pd.DataFrame, seed: int = 42, ratio: float = 0.75, by: str = "item") -> Split:
    """Per-group random split: a fraction ``ratio`` of each item's (or user's) interactions trains."""
    if not 0 < ratio < 1:
        raise ValueError(f"stratified: ratio must be in (0, 1), got {ratio}")
    group = {"item": C.COL_ITEM_ID, "user": C.COL_USER_ID}.get(by)
    if group is None:
        raise ValueError(f"stratified: by must be 'item' or 'user', got {by!r}")
    ordered = _seeded_order(interactions, seed).sort_values([group, "_order"], kind="stable")
    position = ordered.groupby(group).cumcount() + 1
    count = ordered.groupby(group)[group].transform("size")
    in_train = (position / count) <= ratio
    return _finish(STRATIFIED, {"seed": seed, "ratio": ratio, "by": by}, ordered[in_train], ordered[~in_train])


def truncate_histories(train: pd.DataFrame, users: np.ndarray, keep: int) -> pd.DataFrame:
    """Training data where the given users keep only their ``keep`` most recent interactions.

    Other users' rows stay, so statistics over items hardly move; users with at
    most ``keep`` interactions are unchanged.
    """
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    ordered = train.assign(_pos=np.arange(len(train))).sort_values([C.COL_USER_ID, C.COL_TS, "_pos"], kind="stable")
    from_end = ordered.groupby(C.COL_USER_ID).cumcount(ascending=False)
    chosen = ordered[C.COL_USER_ID].isin(users)
    kept = ordered[~chosen | (from_end < keep)]
    return kept.sort_values("_pos").drop(columns="_pos").reset_index(drop=True)


def training_texts(
    texts: pd.DataFrame, train: pd.DataFrame, user_col: str = C.COL_USER_ID, item_col: str = C.COL_ITEM_ID,
    ts_col: str = C.COL_TS,
) -> pd.DataFrame:
    """User-written texts (reviews, tags) that belong to the training part.

    A text is kept when it is about one of the user's training items and was
    written no later than the user's last training interaction: a text about a
    test item, or one written after the split point, would leak.
    """
    _require(texts, [user_col, item_col, ts_col], "texts")
    pairs = train[[C.COL_USER_ID, C.COL_ITEM_ID]].drop_duplicates()
    last = train.groupby(C.COL_USER_ID)[C.COL_TS].max().rename("_last_train_ts")
    kept = texts.merge(
        pairs, left_on=[user_col, item_col], right_on=[C.COL_USER_ID, C.COL_ITEM_ID], how="inner",
        suffixes=("", "_pair"),
    ).merge(last, left_on=user_col, right_index=True)
    kept = kept[kept[ts_col] <= kept["_last_train_ts"]]
    return kept[texts.columns].reset_index(drop=True)


def _seeded_order(interactions: pd.DataFrame, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    out = interactions[INTERACTION_COLUMNS].reset_index(drop=True).copy()
    out["_order"] = rng.permutation(len(out))
    return out


def _finish(protocol: str, params: dict, train: pd.DataFrame, test: pd.DataFrame) -> Split:
    train = train.drop(columns="_order").reset_index(drop=True)
    has_history = test[C.COL_USER_ID].isin(set(train[C.COL_USER_ID]))
    dropped = test.loc[~has_history, C.COL_USER_ID].nunique()
    test = test[has_history].drop(columns="_order").reset_index(drop=True)
    return Split(protocol, params, train, test, dropped)


def _require(frame: pd.DataFrame, columns: list[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} lack column(s) {missing}; they have {list(frame.columns)}")
