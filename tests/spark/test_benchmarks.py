"""Each benchmark at a tiny size, so they keep working (their real runs are not tests)."""

import pytest

pytestmark = [pytest.mark.spark, pytest.mark.slow]


def test_bench_refresh_agrees_with_a_full_recompute(spark, tmp_path):
    from interestlake.benchmarks import refresh_benchmark

    result = refresh_benchmark((300,), new_events=40, new_users=5, history_users=30, items=24, workdir=str(tmp_path))
    [row] = result["results"]
    assert row["recommendations_equal"] and row["interests_max_abs_diff"] <= 1e-5
    assert row["users_changed"] == 5 and row["incremental_seconds"] > 0 and row["full_seconds"] > 0


def test_bench_encode_reports_both_rates_and_the_onnx_line(spark, tmp_path):
    from interestlake.benchmarks import encode_benchmark

    result = encode_benchmark(texts=24, workdir=str(tmp_path))
    assert result["texts"] == 24 and result["bare_texts_per_s"] > 0 and result["spark_texts_per_s"] > 0
    assert result["ratio"] == pytest.approx(result["spark_texts_per_s"] / result["bare_texts_per_s"], rel=0.01)
    assert result["spark_min_cosine_to_bare"] > 0.9999  # the same model, through Spark
    assert result["onnx"]["min_cosine_to_torch"] >= 0.99


def test_bench_score_times_every_scorer_against_als_and_checks_their_lists(spark, tmp_path):
    from interestlake.benchmarks import score_benchmark

    result = score_benchmark(users=300, items=120, k=5, dim=16, check_users=40, history=6, workdir=str(tmp_path))
    # The top-level figures are the production path: a learned model with steering on.
    assert result["path"] == "learned" and set(result["paths"]) == {"learned", "cosine", "plain"}
    assert result["ours_seconds"] == result["paths"]["learned"]["seconds"] and result["als_seconds"] > 0
    assert result["als_noop_seconds"] > 0 and result["paths"]["learned"]["ratio_to_als_noop"] > 0
    for name, path in result["paths"].items():
        assert path["exact_top_k_equal"], name
        assert path["seconds"] > 0 and path["python_worker_peak_mb"] > 0, name
    # Users with a fresh need are not brute-forced (their list is steered); the others are.
    assert result["paths"]["plain"]["checked_users"] == 40
    assert 20 < result["paths"]["learned"]["checked_users"] == result["paths"]["cosine"]["checked_users"] < 40
    assert result["approximate"]["recall_at_k_vs_exact"] >= 0.8


def test_bench_cuda_scores_exactly_on_the_cpu_without_spark(tmp_path):
    # bench/cuda.py on a machine without a GPU: the CPU side of the comparison, no Spark session.
    from interestlake.benchmarks.cuda import cuda_benchmark

    result = cuda_benchmark(users=300, items=120, k=5, dim=16, texts=6, check_users=40, workdir=str(tmp_path),
                            devices=("cpu",))
    assert set(result["score"]) == {"learned", "plain"}
    for name, path in result["score"].items():
        assert set(path) == {"cpu"} and path["cpu"]["exact_top_k_equal"] and path["cpu"]["seconds"] > 0, name
    assert result["score"]["plain"]["cpu"]["checked_users"] == 40
    [run] = result["encode"]["runs"]
    assert run["device"] == "cpu" and run["texts_per_s"] > 0


def test_bench_command_removes_its_temporary_folder_and_keeps_a_given_one(spark, tmp_path, monkeypatch, capsys):
    import json
    import tempfile

    from interestlake.cli import main

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    tiny = ["bench", "score", "--users", "120", "--items", "40", "--k", "5", "--history", "4", "--paths", "plain", "--json"]
    assert main(tiny) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["paths"]["plain"]["exact_top_k_equal"] and result["workdir"] is None
    assert not list((tmp_path / "tmp").glob("interestlake-bench-*"))  # hundreds of MB a real run: gone
    assert main([*tiny, "--workdir", str(tmp_path / "mine")]) == 0
    assert json.loads(capsys.readouterr().out)["workdir"] == str(tmp_path / "mine")
    assert (tmp_path / "mine" / "users").is_dir()  # the user's folder, with what the run wrote
