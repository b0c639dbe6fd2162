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

Under a learned model with a long-term part (``InterestModel.long_term``) the
user vector also reads a running sum over the user's whole history
(``InterestModel.long_terms`` of every folded entry). That sum is not stored in
``user_interests`` yet, so such a model rebuilds every changed user from their
whole history (the changed-item path above, for all of them) instead of folding.
"""

from __future__ import annotations

from collections import Counter
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
from interestlake.models.feedback import dislike_rule, with_dislike_weight
from interestlake.models.interest_model import InterestModel, load_model
from interestlake.pipeline.frames import map_in_arrow, with_values
from interestlake.pipeline.history import (
    REF_COLUMNS, entry_order, history_refs, history_refs_on_driver, resolve_vectors, resolve_vectors_on_driver,
    stored_refs, stored_refs_on_driver, user_history,
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
# The rows of the per-user function: entries (with ``kind``) and state rows (without).
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
    whole = model is not None and model.long_term
    if driver_path(STAGE, lake, settings, since=since, now=now, whole_histories=whole):
        rows = _user_vectors_on_driver(lake, version, inputs, params, model)
        report.counts["users_rebuilt"] = 0
    else:
        if incremental:
            entries, state, rebuilt = _incremental_inputs(lake, version, inputs, dislike, whole)
            report.counts["users_rebuilt"] = rebuilt
        else:
            events, reviews = lake.read(C.EVENTS, now[C.EVENTS]), lake.read(C.REVIEWS, now[C.REVIEWS])
            entries = user_history(lake, version, now, dislike=dislike).withColumn("fold", F.lit(True))
            state = _counts(events, reviews)
        # Entries and state rows (no `kind`) together, each user's rows consecutive:
        # one pass per partition instead of a pandas frame per user (Spark's grouped
        # map costs milliseconds per group before any arithmetic).
        grouped = (
            entries.unionByName(state, allowMissingColumns=True)
            .repartition(C.COL_USER_ID)
            .sortWithinPartitions(C.COL_USER_ID)
        )
        shared = spark.sparkContext.broadcast(model) if model else None
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


def _incremental_inputs(
    lake: LakeTables, version: str, inputs: DerivedInputs, dislike=None, whole: bool = False
) -> tuple[DataFrame, DataFrame, int]:
    """Entries and state of the users with new history since the last commit.

    ``whole``: every such user is rebuilt from their whole history (a model with a long-term part).

    Returns:
        Entries to fold (``fold`` true) and stored recent entries (``fold`` false),
        the state rows, and how many users are rebuilt from their whole history.
    """
    now = inputs.tables
    new_events = lake.changes(C.EVENTS, inputs.since(C.EVENTS), now[C.EVENTS])
    new_reviews = lake.changes(C.REVIEWS, inputs.since(C.REVIEWS), now[C.REVIEWS])
    rebuild = _users_of_changed_items(lake, version, inputs, now)
    if whole:
        changed = new_events.select(C.COL_USER_ID).unionByName(new_reviews.select(C.COL_USER_ID)).distinct()
        rebuild = changed if rebuild is None else rebuild.unionByName(changed).distinct()
    rebuilt = 0
    if rebuild is not None:
        rebuild = rebuild.persist()
        rebuilt = rebuild.count()
    if not rebuilt:
        rebuild = None

    def except_rebuilt(df: DataFrame) -> DataFrame:
        return df if rebuild is None else df.join(F.broadcast(rebuild), C.COL_USER_ID, "left_anti")

    new_refs = except_rebuilt(history_refs(lake, now, new_events, new_reviews, dislike))
    active = except_rebuilt(new_events.select(C.COL_USER_ID).unionByName(new_reviews.select(C.COL_USER_ID)).distinct())
    stored = (
        # This stage is the table's only writer: its latest version is what the last run left.
        lake.read(C.USER_INTERESTS)
        .filter(F.col(C.COL_ENCODER_VERSION) == version)
        .join(F.broadcast(active), C.COL_USER_ID, "left_semi")
    )
    refs = new_refs.withColumn("fold", F.lit(True)).unionByName(
        stored_refs(stored).select(C.COL_USER_ID, *REF_COLUMNS).withColumn("fold", F.lit(False))
    )
    entries = resolve_vectors(lake, version, now, refs)
    state = stored.select(*_STATE_COLUMNS).unionByName(
        _counts(except_rebuilt(new_events), except_rebuilt(new_reviews))
    )
    if rebuild is not None:
        entries = entries.unionByName(user_history(lake, version, now, rebuild, dislike).withColumn("fold", F.lit(True)))
        whole = {t: lake.read(t, now[t]).join(F.broadcast(rebuild), C.COL_USER_ID, "left_semi") for t in (C.EVENTS, C.REVIEWS)}
        state = state.unionByName(_counts(whole[C.EVENTS], whole[C.REVIEWS]))
    return entries, state, rebuilt


def _user_vectors_on_driver(
    lake: LakeTables, version: str, inputs: DerivedInputs, params: InterestParams, model: InterestModel | None
) -> pa.Table:
    """``_incremental_inputs`` and the per-user function of a small batch, on the driver.

    The same rows as the Spark path (new entries to fold, stored recent entries,
    stored statistics, counts to add) go through the same ``_user_vectors``, read
    with filters on the batch's users, items and texts only.
    """
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    now = inputs.tables
    events = lake.change_rows(C.EVENTS, inputs.since(C.EVENTS), now[C.EVENTS],
                              [C.COL_USER_ID, C.COL_TS, C.COL_EVENT_TYPE, C.COL_ITEM_ID, C.COL_TEXT])
    reviews = lake.change_rows(C.REVIEWS, inputs.since(C.REVIEWS), now[C.REVIEWS],
                               [C.COL_USER_ID, C.COL_TS, C.COL_ITEM_ID, C.COL_TEXT])
    events_of = Counter(events.column(C.COL_USER_ID).to_pylist())
    reviews_of = Counter(reviews.column(C.COL_USER_ID).to_pylist())
    active = pa.array(sorted(set(events_of) | set(reviews_of)), pa.string())
    stored = lake.read_arrow(
        C.USER_INTERESTS, [*_STATE_COLUMNS, "recent"],
        (ds.field(C.COL_ENCODER_VERSION) == version) & ds.field(C.COL_USER_ID).isin(active),
    )
    new_refs = history_refs_on_driver(lake, now, events, reviews)
    stored_refs = stored_refs_on_driver(stored)
    refs = pa.concat_tables([
        new_refs.append_column("fold", pa.repeat(True, new_refs.num_rows)),
        stored_refs.drop_columns(["recency"]).append_column("fold", pa.repeat(False, stored_refs.num_rows)),
    ])
    entries = resolve_vectors_on_driver(lake, version, now, refs)
    users = active.to_pylist()
    counts = pa.table({
        C.COL_USER_ID: users,
        "event_count": pa.array([events_of[u] for u in users], pa.int64()),
        "review_count": pa.array([reviews_of[u] for u in users], pa.int64()),
    })
    rows = pa.concat_tables([_as_user_rows(part) for part in (entries, stored.drop_columns(["recent"]), counts)])
    rows = rows.take(pc.sort_indices(rows, [(C.COL_USER_ID, "ascending")]))
    shared = SimpleNamespace(value=model) if model is not None else None
    return map_in_arrow(rows, _user_vectors(params, shared), _RESULT_SCHEMA)


def _as_user_rows(part: pa.Table) -> pa.Table:
    """Entry, stored-state or count rows in the one layout ``_user_vectors`` reads (absent columns null)."""
    columns = [
        part.column(f.name).cast(f.type) if f.name in part.column_names else pa.nulls(part.num_rows, f.type)
        for f in _USER_ROWS
    ]
    return pa.Table.from_arrays(columns, schema=_USER_ROWS)


def _users_of_changed_items(lake: LakeTables, version: str, inputs: DerivedInputs, now: dict) -> DataFrame | None:
    """Users with history on items whose vector appeared or changed since the last run (None: no such item)."""
    if inputs.since(C.ITEM_EMBEDDINGS) == now[C.ITEM_EMBEDDINGS]:
        return None
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


def _counts(events: DataFrame, reviews: DataFrame) -> DataFrame:
    """State rows that add each user's number of events and reviews."""
    def count(df: DataFrame, name: str, other: str) -> DataFrame:
        return df.groupBy(C.COL_USER_ID).agg(F.count(F.lit(1)).alias(name)).withColumn(other, F.lit(0).cast("long"))

    counted = count(events, "event_count", "review_count").unionByName(count(reviews, "review_count", "event_count"))
    return counted.select(
        C.COL_USER_ID,
        F.lit(None).cast("array<double>").alias("decayed_sum"),
        F.lit(None).cast("double").alias("decayed_mass"),
        F.lit(None).cast("timestamp").alias("last_event_at"),
        "event_count",
        "review_count",
    )


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
            columns = _BatchColumns(batch)
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
            if user.model is not None and user.model.long_term:
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
                *((self.long_sum, self.long_count) if self.model.long_term else ()),
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
