"""The interest model's life: trained from the lake, registered, promoted only when better, applied by refresh."""

from __future__ import annotations

import dataclasses
import json

import pytest

from interestlake import constants as C
from tests.conftest import REPO, make_settings

pytestmark = [pytest.mark.spark, pytest.mark.slow]
MODEL_KEY = "model:interestlake-interest-model"


def _refresh(settings, run_id):
    from interestlake.pipeline.refresh import open_pipeline
    from interestlake.pipeline.run import RunContext

    with open_pipeline(settings) as pipeline:
        pipeline.refresh(RunContext.create(run_id))
        runs = pipeline.lake.read(C.PIPELINE_RUNS).toPandas()
        dims = {len(v) for v in pipeline.lake.read(C.USER_INTERESTS).select("interest").toPandas()["interest"]}
        recs = pipeline.lake.read(C.RECOMMENDATIONS).toPandas()
    runs = runs[runs[C.COL_RUN_ID] == run_id].set_index("stage")
    return {stage: dict(runs.loc[stage, "read_versions"]).get(MODEL_KEY) for stage in ("interests", "recommend")}, dims, recs


def test_promotion_refuses_a_worse_model_and_refresh_applies_the_new_champion(spark, tmp_path, monkeypatch, capsys):
    from interestlake.cli import main
    from interestlake.datasets.sample import generate_sample
    from interestlake.models import interest_registry
    from interestlake.models.interest_model import InterestModel
    from interestlake.models.training import TrainResult

    env = {"INTERESTLAKE__LAKE__ROOT": str(tmp_path / "lake"), "INTERESTLAKE__SPARK__MASTER": "local[2]",
           "INTERESTLAKE__MODEL__DIM": "16", "INTERESTLAKE__MODEL__EPOCHS": "4"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = make_settings(tmp_path / "lake", env)
    generate_sample(settings.lake.landing_uri, seed=5, n_users=30, n_items=40, days=7)

    # No model registered: the untrained pooling (encoder-sized vectors), no model version recorded.
    used, dims, first = _refresh(settings, "r1")
    assert used == {"interests": None, "recommend": None} and dims == {384}

    # `interestlake train --promote`: the first version becomes the champion.
    assert main(["train", "--promote", "--json", "--conf", str(REPO / "conf" / "local.yaml")]) == 0
    trained = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert trained["version"] == 1 and trained["promotion"]["promoted"] is True
    assert trained["data_versions"][C.EVENTS] >= 0 and trained["metrics"]["validation_ndcg"] > 0

    # A version that validates worse (the champion's files, logged with a lower
    # validation NDCG) is registered but refused.
    resolved, version = interest_registry.resolve_model(settings)
    assert version == 1
    result = TrainResult(InterestModel.load(resolved.model.uri), dict(trained["metrics"]), {"dim": 16})
    versions = trained["data_versions"]
    champion_ndcg = trained["metrics"]["validation_ndcg"]
    worse = dataclasses.replace(result, metrics={**result.metrics, "validation_ndcg": champion_ndcg - 0.01})
    assert interest_registry.log_model(settings, worse, versions) == 2
    assert main(["promote", "--json", "--conf", str(REPO / "conf" / "local.yaml")]) == 0
    refused = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert refused["version"] == 2 and refused["promoted"] is False and refused["champion_version"] == 1

    # Airflow runs each stage as its own job, resolving @champion as it starts: a recommend
    # job that sees the new champion before the interests job applied it must not score the
    # untrained vectors with the model; it leaves the lists as they are and says why.
    assert main(["recommend", "--json", "--run-id", "r-early", "--conf", str(REPO / "conf" / "local.yaml")]) == 0
    early = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert early["commits"] == [] and "computed with interest model none" in early["note"], early
    assert "applies interestlake-interest-model" in early["note"]

    # The next refresh (no new data) applies the champion: every user recomputed with it.
    used, dims, recs = _refresh(settings, "r2")
    assert used == {"interests": 1, "recommend": 1}
    assert dims == {17}  # model dim 16 + the bias slot
    assert recs[C.COL_RUN_ID].eq("r2").all()
    assert set(recs[C.COL_USER_ID]) == set(first[C.COL_USER_ID]) and len(recs) == len(first)

    # A better version is promoted and picked up by the refresh after that.
    better = dataclasses.replace(result, metrics={**result.metrics, "validation_ndcg": champion_ndcg + 0.01})
    assert interest_registry.log_model(settings, better, versions) == 3
    assert interest_registry.promote(settings).promoted
    used, _, recs = _refresh(settings, "r3")
    assert used == {"interests": 3, "recommend": 3}
    assert recs[C.COL_RUN_ID].eq("r3").all()


def test_torch_distributor_trains_data_parallel(spark, lake, settings):
    """model.trainer = distributor: two local processes under TorchDistributor, rank 0's model comes back."""
    from interestlake.pipeline.train import _distributed, train_params
    from tests.unit.test_interest_model import generated_history

    model = settings.model.model_copy(update={"trainer": "distributor", "num_processes": 2, "dim": 8, "epochs": 2})
    settings = settings.model_copy(update={"model": model})
    result = _distributed(lake, settings, generated_history(users=40), 10, train_params(settings))
    assert result.model.arrays["w_item"].shape == (16, 8)
    assert 0.0 <= result.metrics["validation_ndcg"] <= 1.0 and result.metrics["validation_users"] == 40
