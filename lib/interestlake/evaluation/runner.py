"""One evaluation: a dataset, a protocol, our pipeline and every baseline on the same split.

``evaluate`` reads the dataset, splits it, checks the split for leakage, fits
and scores popularity, item-kNN, ALS and the peers from their own libraries
(``peers.py``; ALS and the peers grid-searched on a validation split of the
training part) and runs our pipeline's stages on the training part, then
scores every method twice: with the full training histories, and with
each test user's history cut to its last ``cold_history`` interactions
(``cold_*`` metrics; the models' item side stays as trained on the full part;
a peer that cannot fold a history in gets no ``cold_*`` metrics).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from interestlake import constants as C
from interestlake.datasets.public import load_dataset
from interestlake.evaluation import metrics as M
from interestlake.evaluation import peers as P
from interestlake.evaluation.baselines import (
    ALSBaseline, ALSGrid, Catalog, ItemKNN, Popularity, recommend, search, search_als,
)
from interestlake.evaluation.diversity import add_list_similarity
from interestlake.evaluation.leakage import check_no_leakage
from interestlake.evaluation.pipeline_method import (
    METHOD, NO_TEXT, ZERO_SHOT, evaluation_settings, pipeline_recommendations, training_tables,
)
from interestlake.evaluation.protocols import STRATIFIED, TEMPORAL, interactions_from_events, make_split, truncate_histories
from interestlake.settings import Settings

log = logging.getLogger("interestlake")
BASELINES = ("popularity", "item_knn", "als")
# The learned model with one more part of steering on (not in the default methods: they
# measure whether a part should be on by default, docs/evaluation.md).
STEERED = {
    f"{METHOD}_negative": {"negative": {"enabled": True}},
    f"{METHOD}_multi_interest": {"multi_interest": {"enabled": True}},
    f"{METHOD}_mmr": {"mmr_weight": 0.3},
}
# bert4rec is cornac's second transformer next to sasrec: selectable, not run by default.
PEERS = tuple(name for name in P.PEERS if name != "bert4rec")
DEFAULT_METHODS = (METHOD, NO_TEXT, ZERO_SHOT, *BASELINES, *PEERS)
METHODS = (*DEFAULT_METHODS, "bert4rec", *STEERED)
# What the learned model is trained for under each protocol (model.objective): on a random
# per-item split the test holds random sets of a user's items, not their next one.
OBJECTIVES = {STRATIFIED: "held-out"}
# Buckets of training history length for the metric-by-history plot.
HISTORY_BUCKETS = ((1, 3), (4, 5), (6, 10), (11, 20), (21, 50), (51, 100), (101, None))


@dataclass
class EvaluationResult:
    """Everything an evaluation measured, ready to print and to log to MLflow."""

    dataset: str
    protocol: str
    k: int
    max_k: int
    params: dict[str, Any]
    methods: dict[str, dict[str, float]]
    curves: pd.DataFrame
    by_history: pd.DataFrame
    # Validation grid of each searched method (ALS, the peers): one row per point.
    grids: dict[str, list[dict[str, Any]]]
    counts: dict[str, int]
    seconds: dict[str, float] = field(default_factory=dict)
    mlflow_run_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The object ``interestlake evaluate --json`` prints."""
        keys = ("recall", "ndcg", "mrr", "hit_rate", "coverage", "cold_recall", "cold_ndcg")
        return {
            "dataset": self.dataset,
            "protocol": self.protocol,
            "k": self.k,
            "methods": {name: {key: round(values[key], 6) for key in (*keys, "ils") if key in values}
                        for name, values in self.methods.items()},
            "mlflow_run_id": self.mlflow_run_id,
            "encoder": self.params.get("encoder_model_uri"),
            "users": self.counts.get("test_users"),
            "seconds": round(self.seconds.get("total", 0.0), 1),
            # Wall time of fitting the learned interest model (None when it was not evaluated).
            "train_seconds": self.seconds.get("train"),
        }

    def table(self) -> pd.DataFrame:
        """Metrics per method (rows) as a table."""
        return pd.DataFrame(self.methods).T.rename_axis("method")


def evaluate(
    spark,
    settings: Settings,
    dataset: str,
    path: str | Path,
    protocol: str,
    *,
    seed: int | None = None,
    k: int | None = None,
    max_k: int | None = None,
    split_params: dict[str, Any] | None = None,
    methods: tuple[str, ...] = DEFAULT_METHODS,
    encoder: Any = None,
    run_id: str | None = None,
) -> EvaluationResult:
    """Evaluates our pipeline and the baselines on one dataset and protocol.

    Args:
        spark: Active session (ALS and our pipeline run on it).
        settings: Loaded settings; ``evaluation`` gives the defaults of the arguments below.
        dataset: ``movielens`` or ``amazon-reviews``.
        path: The dataset's folder or file.
        protocol: ``leave-last-out``, ``temporal`` or ``stratified``.
        seed: Split and model seed.
        k: K of the reported metrics.
        max_k: Longest list computed (metric curves run K = 1..max_k).
        split_params: Protocol parameters (``ratio``, ``cut``, ``quantile``, ``ties``).
        methods: Which of ``interestlake`` (the learned interest model, trained here on the
            training part), ``interestlake_zero_shot`` (the untrained pooling),
            ``popularity``, ``item_knn``, ``als`` and the peers (``peers.PEERS``) to run; a
            peer whose library is missing is skipped with one log line.
        encoder: The registered encoder version our pipeline uses (``ResolvedEncoder``);
            None uses ``settings.encoder`` as it is.
        run_id: Id recorded in the evaluation lake (default ``evaluation__<time>``).

    Returns:
        The metrics of every method, curves, metric by history length and timings.
    """
    conf = settings.evaluation
    seed = conf.seed if seed is None else seed
    k = conf.k if k is None else k
    max_k = max(conf.max_k if max_k is None else max_k, k)
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; methods are {list(METHODS)}")
    params = _split_params(protocol, conf, split_params or {})
    started = time.perf_counter()
    seconds: dict[str, float] = {}

    data = load_dataset(dataset, path)
    interactions = interactions_from_events(data.events)
    split = make_split(protocol, interactions, seed=seed, **params)
    users = split.test_users
    catalog = Catalog.of(split.train)
    cold_train = truncate_histories(split.train, users, conf.cold_history)
    histories = {"full": catalog.matrix(split.train, users), "cold": catalog.matrix(cold_train, users)}
    tables = training_tables(data, split.train)
    cold_tables = training_tables(data, cold_train, item_source=tables.reviews)
    # Item texts built from reviews must hold no held-out review; catalog metadata is
    # no user's writing (a MovieLens tag may well repeat a title).
    held_out = ~data.reviews[C.COL_REVIEW_ID].isin(tables.reviews[C.COL_REVIEW_ID])
    test_texts = data.reviews.loc[held_out, C.COL_TEXT] if data.items is None else None
    check_no_leakage(split, tables.events, tables.reviews, tables.items, test_texts)
    log.info("evaluate: %s %s: %d training interactions, %d test users, %d catalog items",
             dataset, protocol, len(split.train), len(users), len(catalog.items))

    lists: dict[str, dict[str, pd.DataFrame]] = {}
    train_matrix = catalog.matrix(split.train)
    grids: dict[str, list[dict[str, Any]]] = {}
    run_params: dict[str, Any] = {}
    validation = None
    for name in BASELINES:
        if name not in methods:
            continue
        clock = time.perf_counter()
        if name == "popularity":
            model = Popularity().fit(train_matrix)
        elif name == "item_knn":
            model = ItemKNN().fit(train_matrix)
        else:
            grid = ALSGrid(tuple(conf.als.ranks), tuple(conf.als.reg_params), tuple(conf.als.alphas), conf.als.max_iter)
            validation = validation or make_split(protocol, split.train, seed=seed + 1, **_validation_params(protocol, params))
            best, grids[name] = search_als(spark, validation.train, validation.test, grid, k, seed)
            run_params.update({f"als_{key}": value for key, value in best.items()})
            model = ALSBaseline(spark, seed=seed, **best).fit(train_matrix)
        lists[name] = {mode: recommend(model, catalog, history, users, max_k) for mode, history in histories.items()}
        seconds[name] = time.perf_counter() - clock

    peer_names = P.available([name for name in methods if name in P.PEERS])
    if peer_names:
        # Peers read the order of a history (sequential models); the others binarise it.
        ordered = {"full": catalog.matrix(split.train, users, ordered=True),
                   "cold": catalog.matrix(cold_train, users, ordered=True)}
        validation = validation or make_split(protocol, split.train, seed=seed + 1, **_validation_params(protocol, params))
    for name in peer_names:
        clock = time.perf_counter()
        build = P.builder(name, seed, conf.peers.threads)
        best, grids[name] = search(build, P.grid_points(conf.peers.grids[name]), validation.train, validation.test, k,
                                   name, ordered=True)
        run_params.update({f"{name}_{key}": value for key, value in best.items()})
        model = build(best, catalog).fit(catalog.matrix(split.train, ordered=True))
        modes = ordered if model.folds_in else {"full": ordered["full"]}
        lists[name] = {mode: recommend(model, catalog, history, users, max_k) for mode, history in modes.items()}
        seconds[name] = time.perf_counter() - clock

    if {METHOD, ZERO_SHOT, NO_TEXT, *STEERED} & set(methods):
        clock = time.perf_counter()
        ours, trained, no_text = _pipeline_lists(spark, settings, dataset, tables, cold_tables, max_k, encoder, run_id,
                                                 methods, protocol)
        lists.update(ours)
        seconds["pipeline"] = time.perf_counter() - clock
        if no_text is not None:
            seconds["train_no_text"] = no_text.metrics["train_seconds"]
            run_params.update({f"model_no_text_{key}": value for key, value in no_text.metrics.items()})
        if trained is not None:
            seconds["train"] = trained.metrics["train_seconds"]
            run_params.update({f"model_{key}": value for key, value in {**trained.params, **trained.model.meta}.items()
                               if key not in ("data_versions",)})
            run_params.update({f"model_{key}": value for key, value in trained.metrics.items()})

    history_length = split.train.groupby(C.COL_USER_ID).size()
    scores, curve_rows, bucket_rows = {}, [], []
    for name, by_mode in lists.items():
        full = M.ranking_hits(by_mode["full"], split.test, max_k, users)
        result = M.summary(full, k, len(catalog.items))
        if "cold" in by_mode:
            cold = M.ranking_hits(by_mode["cold"], split.test, max_k, users)
            result.update({f"cold_{key}": value for key, value in M.summary(cold, k, len(catalog.items)).items()})
        scores[name] = result
        curve = M.curves(full, range(1, max_k + 1)).reset_index()
        curve_rows.append(curve.assign(method=name))
        per_user = M.per_user_metrics(full, k).join(history_length.rename("history"))
        bucket_rows.extend(_by_history(per_user, name))
    if METHOD in lists:  # intra-list similarity of every method's lists (evaluation/diversity.py)
        add_list_similarity(spark, settings, dataset, getattr(encoder, "encoder_version", settings.encoder.version),
                            lists, scores, k)
    seconds["total"] = time.perf_counter() - started
    encoder_uri = getattr(encoder, "uri", None) or settings.encoder.model_path or "packaged all-MiniLM-L6-v2"
    return EvaluationResult(
        dataset=dataset,
        protocol=protocol,
        k=k,
        max_k=max_k,
        params={
            "dataset": dataset, "dataset_path": str(path), "protocol": protocol, "seed": seed, "k": k, "max_k": max_k,
            "cold_history": conf.cold_history, **{f"split_{key}": value for key, value in split.params.items()},
            "encoder_model_uri": encoder_uri, "encoder_version": getattr(encoder, "encoder_version", settings.encoder.version),
            "encoder_model_version": getattr(encoder, "version", None), **run_params,
        },
        methods=scores,
        curves=pd.concat(curve_rows, ignore_index=True) if curve_rows else pd.DataFrame(),
        by_history=pd.DataFrame(bucket_rows),
        grids=grids,
        counts={
            **{f"dataset_{key}": value for key, value in data.summary().items()},
            "interactions": len(interactions), "train_interactions": len(split.train), "test_interactions": len(split.test),
            "test_users": len(users), "test_users_without_history": split.dropped_test_users,
            "catalog_items": len(catalog.items),
        },
        seconds={name: round(value, 1) for name, value in seconds.items()},
    )


def _pipeline_lists(spark, settings, dataset, tables, cold_tables, max_k, encoder, run_id, methods, protocol):
    """Our pipeline's lists with full and with cold (truncated) histories, from the dataset's evaluation lake.

    ``interestlake`` trains the interest model on the full training part (in the
    evaluation lake, so only on what the split allows) and applies it to both
    passes; ``interestlake_no_text`` trains and applies the same model without any
    encoder vector; ``interestlake_zero_shot`` runs the same stages without a model. The model's
    objective and validation split follow the protocol (``OBJECTIVES``): held-out sets
    for the stratified one, the next item otherwise.

    Returns:
        ({method: {"full": lists, "cold": lists}}, the training result of ``interestlake`` or None,
        that of ``interestlake_no_text`` or None).
    """
    from interestlake.models.interest_model import NO_MODEL
    from interestlake.models.registry import with_encoder

    root = settings.evaluation.lake_root or f"{settings.lake.root.rstrip('/')}/evaluation"
    lake_root = f"{root.rstrip('/')}/{dataset}"
    eval_settings = evaluation_settings(settings, lake_root, max_k)
    eval_settings = eval_settings.model_copy(update={"model": eval_settings.model.model_copy(
        update={"objective": OBJECTIVES.get(protocol, "next-item")})})
    versions = {}
    if encoder is not None:
        eval_settings = with_encoder(eval_settings, encoder)
        versions = {encoder.record_key: encoder.version}
    run_id = run_id or f"evaluation__{pd.Timestamp.now(tz='UTC').isoformat()}"
    model_dir = f"{lake_root}/models/{run_id.replace(':', '-')}"
    variants = {}
    learned = eval_settings.model_copy(update={"model": eval_settings.model.model_copy(
        update={"uri": model_dir, "version": f"evaluation:{run_id}"})})
    if METHOD in methods:
        variants[METHOD] = learned
    if ZERO_SHOT in methods:
        variants[ZERO_SHOT] = eval_settings.model_copy(update={"model": eval_settings.model.model_copy(
            update={"uri": NO_MODEL, "version": None})})
    for name, parts in STEERED.items():
        if name in methods:
            steer = learned.steer.model_copy(update={
                part: getattr(learned.steer, part).model_copy(update=value) if isinstance(value, dict) else value
                for part, value in parts.items()})
            variants[name] = learned.model_copy(update={"steer": steer})
    train_to = {model_dir: eval_settings} if set(variants) - {ZERO_SHOT, NO_TEXT} else {}
    if NO_TEXT in methods:
        # The same model with no encoder vector at all (model.text false), trained on its own.
        no_text = eval_settings.model_copy(update={"model": eval_settings.model.model_copy(
            update={"uri": f"{model_dir}__no_text", "version": f"evaluation:{run_id}:no_text", "text": False})})
        variants[NO_TEXT] = no_text
        train_to[no_text.model.uri] = no_text
    full, _, trained = pipeline_recommendations(spark, eval_settings, tables, f"{run_id}__full", versions, variants, train_to)
    cold, _, _ = pipeline_recommendations(spark, eval_settings, cold_tables, f"{run_id}__cold", versions, variants)
    lists = {name: {"full": full[name], "cold": cold[name]} for name in variants}
    return lists, trained.get(model_dir), trained.get(f"{model_dir}__no_text")


def _split_params(protocol: str, conf, given: dict[str, Any]) -> dict[str, Any]:
    """Protocol parameters: the ones given, else the conf defaults that apply to the protocol."""
    params = {key: value for key, value in given.items() if value is not None}
    if protocol == "stratified":
        params.setdefault("ratio", conf.stratified_ratio)
    elif protocol == TEMPORAL and "cut" not in params:
        params.setdefault("quantile", conf.temporal_quantile)
    return params


def _validation_params(protocol: str, params: dict[str, Any]) -> dict[str, Any]:
    """The validation split re-applies the protocol inside the training part (a fixed cut would not)."""
    if protocol == TEMPORAL and "cut" in params:
        return {key: value for key, value in params.items() if key != "cut"}
    return params


def _by_history(per_user: pd.DataFrame, method: str) -> list[dict[str, Any]]:
    rows = []
    for low, high in HISTORY_BUCKETS:
        mask = per_user["history"] >= low
        if high is not None:
            mask &= per_user["history"] <= high
        if not mask.any():
            continue
        label = f"{low}-{high}" if high is not None else f"{low}+"
        chosen = per_user[mask]
        rows.append({"method": method, "history_length": label, "users": int(mask.sum()),
                     **{name: float(chosen[name].mean()) for name in M.METRICS}})
    return rows

