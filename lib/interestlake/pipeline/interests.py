"""Interests stage: users' embedded history -> ``user_interests``, incrementally.

Only users with new events or reviews since the last commit are recomputed,
from what is stored about them and what is new, never from their whole history:
- the long-term statistics (decayed sum, mass, reference time) are folded
  together with the statistics of the new entries
  (``interestlake.models.interest.fold``);
- the short-term vector reads the newest N of (the N entries stored in
  ``user_interests.recent``) and (the new entries), which are the newest N of
  the whole history;
- event and review counts add the new ones.
Users whose history touches an item whose vector is new or changed are rebuilt
from their whole history, since their statistics were summed with the old (or
no) vector. The first run, a parameter change or ``full=True`` recomputes
everyone, through the same per-user function.

Under a learned model with a long-term part or a whole-history term
(``InterestModel.whole_history``) the user vector also reads a running sum over the
user's whole history (``InterestModel.long_terms`` of every folded entry). That
sum is not stored in ``user_interests`` yet, so such a model rebuilds every
changed user from their whole history (the changed-item path above, for all of
them) instead of folding.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from interestlake import constants as C
from interestlake.lake.schemas import HISTORY_REF
from interestlake.lake.tables import LakeTables
from interestlake.models.interest import DecayedStats, InterestParams, combine, decayed_stats, fold
from interestlake.models.feedback import DislikeRule, dislike_rule, with_dislike_weight
from interestlake.models.interest_model import InterestModel, load_model
from interestlake.pipeline.frames import Rows, map_in_arrow, with_values
from interestlake.pipeline.gather import ArrowReader, Reader, conform, reader
from interestlake.pipeline.history import (
    REF_COLUMNS, counted, entry_order, history_refs, history_rows, resolve_vectors, stored_refs,
)
from interestlake.pipeline.run import DerivedInputs, RunContext, StageReport, derived_inputs, driver_path
from interestlake.pipeline.topics import refresh_topics
from interestlake.settings import Settings

STAGE = "interests"
INPUT_TABLES = (C.EVENTS, C.REVIEWS, C.ITEMS, C.TEXT_EMBEDDINGS, C.ITEM_EMBEDDINGS)
_VECTOR = T.ArrayType(T.FloatType())
_RESULT_SCHEMA = T.StructType(
    [
        T.StructField(C.COL_USER_ID, T.StringType(), False),
        T.StructField("long_term", _VECTOR, False),
        T.StructField("short_term", _VECTOR, False),
        T.StructField("interest", _VECTOR, False),
        T.StructField("decayed_sum", T.ArrayType(T.DoubleType()), False),
        T.StructField("decayed_mass", T.DoubleType(), False),
        T.StructField("last_event_at", T.TimestampType(), False),
        T.StructField("event_count", T.LongType(), False),
        T.StructField("review_count", T.LongType(), False),
        T.StructField("recent", T.ArrayType(HISTORY_REF), False),
    ]
)
# State rows of the per-user function: the stored statistics (one row, for users
# folded incrementally) and counts of events and reviews to add.
_STATE_COLUMNS = [C.COL_USER_ID, "decayed_sum", "decayed_mass", "last_event_at", "event_count", "review_count"]
_TIME = pa.timestamp("us", tz="UTC")
# The rows of the per-user function (``_user_rows``): entries (with ``kind``) and state rows (without).
_USER_ROWS = pa.schema([
    (C.COL_USER_ID, pa.string()), (C.COL_TS, _TIME), ("kind", pa.string()), (C.COL_ITEM_ID, pa.string()),
    (C.COL_TEXT_HASH, pa.string()), ("label", pa.string()), (C.COL_EMBEDDING, pa.list_(pa.float32())),
    ("fold", pa.bool_()), ("decayed_sum", pa.list_(pa.float64())), ("decayed_mass", pa.float64()),
    ("last_event_at", _TIME), ("event_count", pa.int64()), ("review_count", pa.int64()),
])


def interests(
    spark: SparkSession, lake: LakeTables, settings: Settings, run: RunContext, full: bool = False
) -> StageReport:
    """Updates ``user_interests`` for the users whose inputs changed.

    Args:
        spark: Active session.
        lake: Table layer.
        settings: Loaded settings (``interests``, ``encoder.version``).
        run: Run identity.
        full: Recompute every user from the whole history.

    Returns:
        Counts of users changed (folded or rebuilt) and rebuilt, and the input versions read.
    """
    report = StageReport(STAGE, run.run_id)
    version = settings.encoder.version
    dislike = dislike_rule(settings.steer)
    # user_topics follows the same events and reviews (steer.topics; its own inputs and commit).
    report.commits += refresh_topics(lake, settings, run, report.counts, full)
    model = load_model(settings)
    inputs = derived_inputs(
        lake, report, C.USER_INTERESTS, INPUT_TABLES,
        {"encoder": version, "model": settings.model.version if model else None, **settings.interests.model_dump(),
         **({"dislike": settings.steer.negative.model_dump()} if dislike else {})},
    )
    if not full and inputs.unchanged:
        report.note = "inputs unchanged since the last commit; nothing to do"
        return report
    now = inputs.tables
    incremental = not full and inputs.same_params
    params = with_dislike_weight(InterestParams(**settings.interests.model_dump()), settings.steer)
    stamp = {
        C.COL_ENCODER_VERSION: version,
        C.COL_RUN_ID: run.run_id,
        # Wall-clock time, unique per write (a retry shares the run id and logical
        # date): recommend tells rewritten rows from copied ones by it.
        C.COL_UPDATED_AT: datetime.now(timezone.utc),
    }
    since = {t: inputs.since(t) for t in INPUT_TABLES} if incremental else None
    # The long-term part's running sum is not stored: changed users are rebuilt whole (module docstring).
    whole = model is not None and model.whole_history
    read = reader(lake, driver_path(STAGE, lake, settings, since=since, now=now, whole_histories=whole))
    grouped, report.counts["users_rebuilt"] = _user_rows(read, version, inputs, dislike, whole, incremental)
    shared = None
    if model is not None:
        shared = SimpleNamespace(value=model) if isinstance(read, ArrowReader) else spark.sparkContext.broadcast(model)
    rows = map_in_arrow(grouped, _user_vectors(params, shared), _RESULT_SCHEMA)
    rows = with_values(rows, stamp)
    metadata = {
        "stage": STAGE, "run_id": run.run_id, "inputs": inputs.fingerprint,
        "mode": "incremental" if incremental else "full",
        # Which interest model made these vectors: recommend must score them with the same one.
        "model": settings.model.version if model else None,
    }
    commit = lake.merge(C.USER_INTERESTS, rows, txn=run.txn(STAGE), metadata=metadata)
    report.counts["users_changed"] = commit.source_rows
    if commit.skipped == "no rows":
        report.note = "no user has new history"
    report.commits.append(commit)
    return report


def _user_rows(
    read: Reader, version: str, inputs: DerivedInputs, dislike: DislikeRule | None, whole: bool, incremental: bool
) -> tuple[Rows, int]:
    """The rows of the per-user function (``USER_ROWS``), each user's rows consecutive, and how many users are rebuilt.

    ``read`` only puts raw rows together (``history_rows``, stored ``user_interests`` rows,
    lookups); the references, counts and stored entries derive from them by the Arrow
    functions of ``interestlake.pipeline.history``, whichever reader gathered them. Entries
    to fold have ``fold`` true, the stored recent entries false; state rows (no ``kind``)
    hold the stored statistics or counts to add.

    Incremental: the users with new history since the last commit, from what is stored
    about them and what is new; those whose history touches a changed item vector (and,
    with ``whole``, every one of them: a model with a long-term part) are rebuilt from their
    whole history. Otherwise everyone, from their whole history.
    """
    now = inputs.tables
    if not incremental:
        raw = history_rows(read, now)
        entries = resolve_vectors(read, version, now, with_values(history_refs(raw, dislike), {"fold": True}))
        return read.by_user(read.union([entries, counted(raw)])), 0
    new = history_rows(read, now, since={t: inputs.since(t) for t in (C.EVENTS, C.REVIEWS)})
    rebuild = _users_of_changed_items(read, version, inputs)
    if whole:
        changed = read.users(new)
        rebuild = changed if rebuild is None else read.distinct(read.union([rebuild, changed]))
    rebuilt = 0
    if rebuild is not None:
        rebuild, rebuilt = read.kept(rebuild)
    if rebuilt:
        new = read.without(new, rebuild)
    # This stage is the table's only writer: its latest version is what the last run left.
    stored = read.of_users(C.USER_INTERESTS, None, [*_STATE_COLUMNS, "recent"], read.users(new),
                           [(C.COL_ENCODER_VERSION, "=", version)])
    refs = [with_values(history_refs(new, dislike), {"fold": True}),
            with_values(stored_refs(stored).select([C.COL_USER_ID, *REF_COLUMNS]), {"fold": False})]
    state = [stored.select(_STATE_COLUMNS), counted(new)]
    if rebuilt:
        whole_history = history_rows(read, now, users=rebuild)
        refs.append(with_values(history_refs(whole_history, dislike), {"fold": True}))
        state.append(counted(whole_history))
    entries = resolve_vectors(read, version, now, read.union(refs))
    return read.by_user(read.union([entries, *state])), rebuilt


def _users_of_changed_items(read: Reader, version: str, inputs: DerivedInputs) -> DataFrame | None:
    """Users with history on items whose vector appeared or changed since the last run (None: no such item).

    Scans events and reviews with Spark: ``driver_path`` sends such a batch to Spark.
    """
    now = inputs.tables
    if inputs.since(C.ITEM_EMBEDDINGS) == now[C.ITEM_EMBEDDINGS]:
        return None
    if isinstance(read, ArrowReader):
        raise ValueError("users of changed item vectors are found with Spark (SparkReader), not on the driver")
    lake = read.lake
    changed_items = [
        row[0]
        for row in lake.changes(C.ITEM_EMBEDDINGS, inputs.since(C.ITEM_EMBEDDINGS), now[C.ITEM_EMBEDDINGS])
        .filter(F.col(C.COL_ENCODER_VERSION) == version)
        .select(C.COL_ITEM_ID)
        .distinct()
        .collect()
    ]
    if not changed_items:
        return None
    # Scans events and reviews, but only when the catalog changed.
    touched = [
        lake.read(table, now[table]).filter(F.col(C.COL_ITEM_ID).isin(changed_items)).select(C.COL_USER_ID)
        for table in (C.EVENTS, C.REVIEWS)
    ]
    return touched[0].unionByName(touched[1]).distinct()


def _user_vectors(params: InterestParams, model=None):
    """Builds the executor function: rows sorted by user in, one result row per user out.

    ``model`` (a broadcast ``InterestModel``) makes ``interest`` the learned model's
    user vector of the newest N entries; without it, the untrained blend of the
    long-term and attention-pooled short-term vectors.

    Rows arrive in Arrow batches, each user's rows consecutive (a user may span
    batches). A user's entries are folded batch by batch and only the newest N
    are kept, so memory stays bounded by the batch size whatever one user's
    history length. Everything is numpy and plain lists: a pandas frame per user
    would cost more than the arithmetic.
    """
    schema = _arrow_result_schema()

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        current: _UserFold | None = None
        done: list[dict] = []
        for batch in batches:
            # A full run's state rows are counts only: no stored statistics.
            columns = _BatchColumns(conform(batch, _USER_ROWS, optional=_STATE_COLUMNS[1:4]))
            for user, start, end in columns.segments():
                if current is None or current.user != user:
                    if current is not None and (row := current.result()) is not None:
                        done.append(row)
                    current = _UserFold(user, params, model.value if model is not None else None)
                columns.add_to(current, start, end)
            if done:
                yield _result_batch(done, schema)
                done = []
        if current is not None and (row := current.result()) is not None:
            yield _result_batch([row], schema)

    return run


class _BatchColumns:
    """The columns of one input batch as numpy arrays and lists, extracted once."""

    def __init__(self, batch: pa.RecordBatch):
        import pyarrow.compute as pc

        self.users = np.asarray(batch.column(C.COL_USER_ID).to_pylist(), dtype=object)
        kinds = batch.column("kind")
        self.is_entry = kinds.is_valid().to_numpy(zero_copy_only=False)
        self.kinds = kinds.to_pylist()
        self.micros = pc.fill_null(batch.column(C.COL_TS).cast(pa.int64()), 0).to_numpy()
        self.items = batch.column(C.COL_ITEM_ID).to_pylist()
        self.hashes = batch.column(C.COL_TEXT_HASH).to_pylist()
        self.labels = batch.column("label").to_pylist()
        self.fold = pc.fill_null(batch.column("fold"), False).to_numpy(zero_copy_only=False)
        self.masses = batch.column("decayed_mass").to_pylist()
        self.last_at = pc.fill_null(batch.column("last_event_at").cast(pa.int64()), 0).to_numpy()
        self.events = pc.fill_null(batch.column("event_count"), 0).to_numpy()
        self.reviews = pc.fill_null(batch.column("review_count"), 0).to_numpy()
        self._sums = batch.column("decayed_sum")
        self._embeddings = batch.column(C.COL_EMBEDDING)

    def segments(self) -> Iterator[tuple[str, int, int]]:
        """(user, start, end) of each run of one user's rows."""
        if len(self.users) == 0:
            return
        starts = np.flatnonzero(np.r_[True, self.users[1:] != self.users[:-1]])
        ends = np.r_[starts[1:], len(self.users)]
        for start, end in zip(starts.tolist(), ends.tolist()):
            yield self.users[start], start, end

    def vectors(self, rows: np.ndarray) -> np.ndarray:
        """(len(rows), d) float64 embeddings of entry rows."""
        picked = self._embeddings.take(pa.array(rows, type=pa.int64()))
        return picked.flatten().to_numpy(zero_copy_only=False).astype(np.float64).reshape(len(rows), -1)

    def add_to(self, user: _UserFold, start: int, end: int) -> None:
        """Adds rows [start, end) of this batch, all of one user, to their fold."""
        for row in range(start, end):
            if not self.is_entry[row]:
                user.events += int(self.events[row])
                user.reviews += int(self.reviews[row])
                if self.masses[row] is not None:
                    stored = DecayedStats(np.asarray(self._sums[row].as_py(), dtype=np.float64), float(self.masses[row]),
                                          self.last_at[row] / 1e6)
                    user.stats = fold(user.stats, stored, user.params.half_life_days)
        rows = np.arange(start, end)[self.is_entry[start:end]]
        if len(rows) == 0:
            return
        folded = rows[self.fold[rows]]
        if len(folded):
            vectors, kinds = self.vectors(folded), [self.kinds[r] for r in folded]
            new = decayed_stats(vectors, kinds, self.micros[folded] / 1e6, user.params)
            user.stats = fold(user.stats, new, user.params.half_life_days)
            if user.model is not None and user.model.whole_history:
                total, count = user.model.long_terms(vectors, kinds, [self.items[r] for r in folded])
                user.long_sum, user.long_count = user.long_sum + total, user.long_count + count
        # Only entries at least as new as the N-th newest can enter the window.
        last_n = user.params.short_term_events
        if len(rows) > last_n:
            cutoff = np.partition(self.micros[rows], len(rows) - last_n)[len(rows) - last_n]
            rows = rows[self.micros[rows] >= cutoff]
        vectors = self.vectors(rows)
        user.recent.extend(
            (entry_order(int(self.micros[r]), self.kinds[r], self.items[r], self.labels[r], self.hashes[r]),
             (int(self.micros[r]), self.kinds[r], self.items[r], self.hashes[r], self.labels[r]), vectors[i])
            for i, r in enumerate(rows.tolist())
        )
        user.recent.sort(key=lambda entry: entry[0])
        del user.recent[last_n:]


class _UserFold:
    """One user's running long-term statistics, counts and newest N entries."""

    def __init__(self, user: str, params: InterestParams, model: InterestModel | None = None):
        self.user = user
        self.params = params
        self.model = model
        self.stats: DecayedStats | None = None
        self.events = 0
        self.reviews = 0
        # (order key, reference, vector), newest first.
        self.recent: list[tuple[tuple, tuple, np.ndarray]] = []
        # The model's long-term running sum over every folded entry, and their number.
        self.long_sum: np.ndarray | float = 0.0
        self.long_count = 0

    def result(self) -> dict | None:
        """The user's ``user_interests`` values; None for a user with no embedded entry."""
        if self.stats is None or not self.recent:
            return None
        # combine() reads the recent entries oldest first; disliked ones pull no attention.
        liked = [vector for _, ref, vector in reversed(self.recent) if ref[1] != C.EVENT_DISLIKE]
        vectors = np.stack(liked or [vector for _, _, vector in reversed(self.recent)])
        result = combine(self.stats, vectors, self.params)
        interest = result.interest
        if self.model is not None:
            refs = [ref for _, ref, _ in self.recent]
            interest = self.model.user_vector(
                np.stack([vector for _, _, vector in self.recent]), [ref[1] for ref in refs],
                np.array([ref[0] / 1e6 for ref in refs]), [ref[2] for ref in refs],
                *((self.long_sum, self.long_count) if self.model.whole_history else ()),
            )
        return {
            C.COL_USER_ID: self.user,
            "long_term": result.long_term,
            "short_term": result.short_term,
            "interest": interest,
            "decayed_sum": self.stats.weighted_sum,
            "decayed_mass": self.stats.mass,
            "last_event_at": round(self.stats.ref_seconds * 1e6),
            "event_count": self.events,
            "review_count": self.reviews,
            "recent": [dict(zip(REF_COLUMNS, ref)) for _, ref, _ in self.recent],
        }


def _arrow_result_schema() -> pa.Schema:
    from interestlake.lake.schemas import arrow_schema

    return arrow_schema(_RESULT_SCHEMA)


def _result_batch(rows: list[dict], schema: pa.Schema) -> pa.RecordBatch:
    """Result rows as one Arrow batch; vectors are laid out as flat list arrays."""
    def vectors(name: str, dtype) -> pa.Array:
        values = [np.asarray(row[name], dtype=dtype) for row in rows]
        offsets = np.r_[0, np.cumsum([len(v) for v in values])].astype(np.int32)
        return pa.ListArray.from_arrays(pa.array(offsets), pa.array(np.concatenate(values)), type=schema.field(name).type)

    columns = {}
    for field in schema:
        if field.name in ("long_term", "short_term", "interest"):
            columns[field.name] = vectors(field.name, np.float32)
        elif field.name == "decayed_sum":
            columns[field.name] = vectors(field.name, np.float64)
        else:
            columns[field.name] = pa.array([row[field.name] for row in rows], type=field.type)
    return pa.RecordBatch.from_pydict(columns, schema=schema)
