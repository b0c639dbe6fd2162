"""The evaluation harness with Spark: ALS, our pipeline on a small dataset, MLflow tracking and the registry."""

import json

import numpy as np
import pandas as pd
import pytest

from interestlake import constants as C
from interestlake.evaluation import baselines as B
from tests.conftest import make_settings

pytestmark = [pytest.mark.spark, pytest.mark.slow]


def test_als_user_step_reproduces_sparks_user_factors(spark):
    rng = np.random.default_rng(0)
    rows = [(f"u{u:02d}", f"i{i:02d}", pd.Timestamp(0, tz="UTC")) for u in range(40) for i in range(30) if rng.random() < 0.2]
    train = pd.DataFrame(rows, columns=[C.COL_USER_ID, C.COL_ITEM_ID, C.COL_TS])
    catalog = B.Catalog.of(train)
    matrix = catalog.matrix(train)
    model = B.ALSBaseline(spark, rank=4, reg_param=0.1, alpha=5.0, max_iter=8, seed=1).fit(matrix)
    # Spark's last half-iteration solves every user's normal equations against the final item factors.
    np.testing.assert_allclose(model.user_vectors(matrix), model.user_factors, atol=2e-4)
    scores = model.score(matrix[:3])
    assert scores.shape == (3, len(catalog.items))


def write_movielens(folder, users=24, movies=30, seed=5):
    """A small MovieLens-layout folder: two taste groups (guitars vs. coffee films), so there is signal."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    genres = ["Music|Documentary", "Comedy|Romance"]
    titles = ["Guitar Heroes", "Strings Attached", "Amp It Up", "Fretless", "Rock School",
              "Coffee Talk", "Espresso Nights", "Barista Love", "Latte Days", "Bean There"]
    movie_rows = [f'{m},"{titles[m % 10]} {m} (2000)",{genres[(m % 10) // 5]}' for m in range(movies)]
    (folder / "movies.csv").write_text("movieId,title,genres\n" + "\n".join(movie_rows) + "\n")
    ratings = []
    for u in range(users):
        group = u % 2
        liked = [m for m in range(movies) if (m % 10) // 5 == group]
        for n, m in enumerate(rng.choice(liked, size=8, replace=False)):
            ratings.append(f"{u},{m},{rng.integers(3, 6)}.0,{1_000_000_000 + u * 1000 + n * 10}")
    (folder / "ratings.csv").write_text("userId,movieId,rating,timestamp\n" + "\n".join(ratings) + "\n")
    (folder / "tags.csv").write_text("userId,movieId,tag,timestamp\n")
    return folder


def test_evaluate_runs_every_method_and_logs_an_mlflow_run(spark, tmp_path):
    import mlflow
    from mlflow.tracking import MlflowClient

    from interestlake.evaluation.runner import evaluate
    from interestlake.evaluation.tracking import log_evaluation

    data = write_movielens(tmp_path / "ml")
    settings = make_settings(tmp_path / "lake", {
        "INTERESTLAKE__EVALUATION__ALS": "{ranks: [4], reg_params: [0.1], alphas: [1.0], max_iter: 3}",
        "INTERESTLAKE__EVALUATION__MAX_K": "12",
    })
    # The peers have their own test below (their fits would only lengthen this one).
    result = evaluate(spark, settings, "movielens", data, "leave-last-out", k=5, run_id="eval-test-1",
                      methods=("interestlake", "interestlake_zero_shot", "popularity", "item_knn", "als"))
    summary = result.to_json()
    assert set(summary["methods"]) == {"interestlake", "interestlake_zero_shot", "popularity", "item_knn", "als"}
    for values in summary["methods"].values():
        assert set(values) == {"recall", "ndcg", "mrr", "hit_rate", "coverage", "cold_recall", "cold_ndcg", "ils"}
        # ils: intra-list similarity, a mean cosine under our item vectors.
        assert all(0.0 <= v <= 1.0 for key, v in values.items() if key != "ils") and -1.0 <= values["ils"] <= 1.0
    assert result.counts["test_users"] == 24
    # Two taste groups: recommending by title/genre text beats chance (1 of 30 items relevant).
    assert summary["methods"]["interestlake"]["hit_rate"] > 0.3
    assert summary["methods"]["interestlake_zero_shot"]["hit_rate"] > 0.3
    # The learned model was trained on the training part and logged with the run.
    assert result.params["model_validation_users"] > 0 and "model_knn_weight" in result.params
    assert 0 < summary["train_seconds"] <= summary["seconds"]  # the report says how long training took
    assert sorted(result.curves["k"].unique()) == list(range(1, 13))

    # Our method ran the real stages in the dataset's evaluation lake; the cold pass
    # (a subset of the same texts) found every text in the embedding cache, as a
    # second evaluation of the dataset does.
    from interestlake.lake.tables import open_lake

    lake_settings = settings.lake.model_copy(update={"root": f"{settings.lake.root}/evaluation/movielens"})
    runs = open_lake(spark, lake_settings).read(C.PIPELINE_RUNS).toPandas()
    assert set(runs["stage"]) == {"encode", "interests", "recommend"}
    assert set(runs["run_id"]) == {
        f"eval-test-1__{part}{variant}" for part in ("full", "cold")
        for variant in ("", "__interestlake", "__interestlake_zero_shot")
    }
    encodes = runs[runs["stage"] == "encode"].set_index("run_id")["counts"].map(dict)
    assert encodes["eval-test-1__full"]["texts_to_encode"] > 0
    assert encodes["eval-test-1__cold"]["texts_to_encode"] == 0

    run_id = log_evaluation(result, settings)
    client = MlflowClient(mlflow.get_tracking_uri())
    run = client.get_run(run_id)
    assert mlflow.get_tracking_uri().startswith("sqlite:///") and str(tmp_path) in mlflow.get_tracking_uri()
    assert run.data.params["protocol"] == "leave-last-out" and run.data.params["k"] == "5"
    assert run.data.metrics["item_knn.recall"] == pytest.approx(result.methods["item_knn"]["recall"])
    assert len(client.get_metric_history(run_id, "als.ndcg_at_k")) == 12
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"metrics.csv", "metrics.json", "als_grid.csv", "recall_at_k.png", "ndcg_at_k.png",
            "ndcg_by_history_length.png"} <= artifacts
    # Artifacts live under the lake, not in ./mlruns of the working directory.
    assert str(tmp_path) in run.info.artifact_uri
    logged = json.loads(open(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="metrics.json")).read())
    assert logged["mlflow_run_id"] == run_id


PEERS = ("{grids: {ease: {lamb: [1.0, 10.0], posB: [false]}, "
         "implicit_bpr: {factors: [4], iterations: [20], learning_rate: [0.05]}}}")


def test_evaluate_runs_peers_on_the_same_split_with_their_grids_in_mlflow(spark, tmp_path):
    pytest.importorskip("cornac", reason="cornac not installed (pip install -e '.[peers]')")
    pytest.importorskip("implicit", reason="implicit not installed (pip install -e '.[peers]')")
    from mlflow.tracking import MlflowClient

    from interestlake.evaluation.runner import evaluate
    from interestlake.evaluation.tracking import log_evaluation

    data = write_movielens(tmp_path / "ml")
    settings = make_settings(tmp_path / "lake", {"INTERESTLAKE__EVALUATION__PEERS": PEERS})
    result = evaluate(spark, settings, "movielens", data, "leave-last-out", k=5,
                      methods=("popularity", "ease", "implicit_bpr"))
    assert set(result.methods) == {"popularity", "ease", "implicit_bpr"}
    # Two points searched on the validation split, the chosen one recorded; BPR cannot
    # fold in a cut history, so it has no cold metrics (rather than wrong ones).
    assert [row["lamb"] for row in result.grids["ease"]] == [1.0, 10.0]
    assert result.params["ease_lamb"] in (1.0, 10.0) and "ease_posB" in result.params
    assert "cold_ndcg" in result.methods["ease"] and "cold_ndcg" not in result.methods["implicit_bpr"]
    # Two taste groups: EASE's item-item weights find the user's group.
    assert result.methods["ease"]["hit_rate"] > result.methods["popularity"]["hit_rate"]
    assert {"ease", "implicit_bpr"} <= set(result.seconds)

    run_id = log_evaluation(result, settings)
    client = MlflowClient()
    assert {"ease_grid.csv", "implicit_bpr_grid.csv"} <= {a.path for a in client.list_artifacts(run_id)}
    run = client.get_run(run_id)
    assert run.data.params["ease_lamb"] == str(result.params["ease_lamb"])
    assert "ease.ndcg" in run.data.metrics and "seconds.ease" in run.data.metrics


def test_evaluate_skips_a_peer_whose_library_is_missing_with_one_line(spark, tmp_path, monkeypatch, caplog):
    import sys

    from interestlake.evaluation.runner import evaluate

    # None in sys.modules makes `import cornac` fail as if it were not installed.
    monkeypatch.setitem(sys.modules, "cornac", None)
    data = write_movielens(tmp_path / "ml")
    settings = make_settings(tmp_path / "lake")
    with caplog.at_level("INFO", logger="interestlake"):
        result = evaluate(spark, settings, "movielens", data, "leave-last-out", k=5, methods=("popularity", "ease"))
    assert set(result.methods) == {"popularity"}
    about = [r for r in caplog.records if "ease" in r.getMessage()]
    assert len(about) == 1 and about[0].exc_info is None
    assert "pip install -e '.[peers]'" in about[0].getMessage() and "\n" not in about[0].getMessage()


def test_encoder_registered_loaded_by_alias_and_pinned_per_run(spark, tmp_path, monkeypatch, capsys):
    import mlflow
    from mlflow.tracking import MlflowClient

    from interestlake.models import registry
    from interestlake.models.encoder import encode_texts, load_encoder, resolve_model_path
    from interestlake.pipeline.refresh import open_pipeline
    from interestlake.pipeline.run import RunContext
    from tests.spark.test_stages import ITEMS, write_jsonl

    settings = make_settings(tmp_path / "lake")
    first = registry.register_encoder(settings)
    assert (first.name, first.version) == ("interestlake-encoder", 1)
    registry.configure(settings)
    loaded = mlflow.sentence_transformers.load_model("models:/interestlake-encoder@champion")
    packaged = load_encoder(resolve_model_path(settings.encoder), "cpu")
    texts = ["pour over kettle", "nylon guitar strings"]
    np.testing.assert_allclose(encode_texts(loaded, texts, 8), encode_texts(packaged, texts, 8), atol=1e-5)

    # A job names the alias; it runs with the concrete version and records it.
    pinned = make_settings(tmp_path / "lake", {"INTERESTLAKE__ENCODER__MODEL_PATH": "models:/interestlake-encoder@champion"})
    write_jsonl(tmp_path / "lake" / "landing" / "items" / "items.jsonl", ITEMS[:2])
    run = RunContext.create("registry-run", "2026-11-01T00:00:00Z")
    with open_pipeline(pinned, writer=run.run_id) as pipeline:
        assert pipeline.settings.encoder.model_path == "models:/interestlake-encoder/1"
        # Moving the alias to a new version now does not change this run's encoder.
        client = MlflowClient()
        source = client.get_model_version("interestlake-encoder", "1")
        client.create_model_version("interestlake-encoder", source.source, run_id=source.run_id)
        client.set_registered_model_alias("interestlake-encoder", registry.CHAMPION, "2")
        for stage in ("ingest", "encode"):
            pipeline.run_stage(stage, run)
        lake = pipeline.lake
        versions = {r.encoder_version for r in lake.read(C.TEXT_EMBEDDINGS).select(C.COL_ENCODER_VERSION).collect()}
        assert versions == {"interestlake-encoder/1"}
        runs = lake.read(C.PIPELINE_RUNS).toPandas().set_index("stage")
        assert dict(runs.loc["encode", "read_versions"])["model:interestlake-encoder"] == 1
    assert registry.resolve(settings, "models:/interestlake-encoder@champion").version == 2

    # The command prints the JSON of the issue and names the champion it evaluated.
    from interestlake.cli import main

    monkeypatch.setenv("INTERESTLAKE__LAKE__ROOT", str(tmp_path / "lake"))
    data = write_movielens(tmp_path / "ml")
    assert main(["evaluate", "--dataset", "movielens", "--path", str(data), "--protocol", "stratified",
                 "--methods", "popularity,item_knn", "--json", "-q"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert (printed["dataset"], printed["protocol"], printed["k"]) == ("movielens", "stratified", 10)
    assert set(printed["methods"]) == {"popularity", "item_knn"}
    assert printed["encoder"] == "models:/interestlake-encoder/2"
    run = MlflowClient().get_run(printed["mlflow_run_id"])
    assert run.data.params["encoder_model_version"] == "2"


def test_import_dataset_lands_files_that_ingest_quarantines_by_source_line(spark, tmp_path, monkeypatch, capsys):
    from interestlake.cli import main
    from interestlake.lake.tables import open_lake

    amazon = tmp_path / "amazon"
    amazon.mkdir()
    good = {"reviewerID": "A1", "asin": "B1", "overall": 5.0, "reviewText": "Crisp pop filter.", "summary": "Good",
            "unixReviewTime": 1393545600, "vote": "2", "verified": True}
    lines = [json.dumps(good), "{broken", json.dumps({**good, "asin": "B2", "unixReviewTime": "yesterday"})]
    (amazon / "reviews_Instruments.json").write_text("\n".join(lines) + "\n")
    monkeypatch.setenv("INTERESTLAKE__LAKE__ROOT", str(tmp_path / "lake"))
    assert main(["import-dataset", "--dataset", "amazon-reviews", "--path", str(amazon), "--ingest", "-q"]) == 0
    assert "wrote 3 landing file(s)" in capsys.readouterr().out

    lake = open_lake(spark, make_settings(tmp_path / "lake").lake)
    assert [r.review_id for r in lake.read(C.REVIEWS).collect()] == ["A1:B1:1393545600"]
    assert [r.event_type for r in lake.read(C.EVENTS).collect()] == ["purchase"]
    item = lake.read(C.ITEMS).collect()[0]
    assert (item.item_id, item.description) == ("B1", "Good. Crisp pop filter.")
    quarantined = sorted((r.kind, r.row_no, r.reason) for r in lake.read(C.QUARANTINE).collect())
    assert quarantined == [("events", 2, "invalid_json"), ("events", 3, "invalid_timestamp"),
                           ("reviews", 2, "invalid_json"), ("reviews", 3, "invalid_timestamp")]
