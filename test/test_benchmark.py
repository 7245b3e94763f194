"""``structvpr benchmark`` on real shared images: small sets and resolutions to stay quick."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from structvpr_core.cli import main
from structvpr_core.data.datasets import gardenspoint, grief_seasons
from structvpr_core.evaluation.benchmark import EVAL_SETS, EvalSet, markdown_table, paired_difference, run_benchmark
from structvpr_core.evaluation.evaluate import evaluate_place_set
from structvpr_core.runtime.encoder import load_encoder

SMALL_SETS = (
    EvalSet("gardenspoint viewpoint", lambda data: [gardenspoint(data / "gardenspoint", "test", "day_right", "day_left")],
            True),
    EvalSet("grief seasons", lambda data: grief_seasons(data / "grief_seasons", "test"), False),
)
SMALL_BUDGET = 12800  # pixels: keeps the network baselines quick


@pytest.fixture(scope="module")
def two_models(tmp_path_factory, shared):
    cache = tmp_path_factory.mktemp("cache")
    messages = []
    report = run_benchmark(["raw-pixel", "random-mobilenetv2"], SMALL_SETS, data_root=shared / "data",
                           cache_dir=cache, input_pixels=SMALL_BUDGET, log=messages.append)
    return report, cache, messages


def test_two_models_on_two_real_sets(two_models):
    report, _, messages = two_models
    assert [(r["model"], r["set"]) for r in report["results"]] == [
        (m, s.name) for m in ("raw-pixel", "random-mobilenetv2") for s in SMALL_SETS]
    for r in report["results"]:
        for gt in ("soft", "hard"):
            recalls = [r[gt][f"recall@{k}"] for k in (1, 5, 10)]
            assert recalls == sorted(recalls) and 0 <= recalls[0] and recalls[-1] <= 1
        assert r["hard"]["recall@1"] <= r["soft"]["recall@1"]
    gp = report["results"][0]
    assert gp["soft"]["num_evaluated"] == 25 and gp["resolution"] == [64, 32]  # raw-pixel: its own grid
    assert report["results"][1]["soft"]["num_evaluated"] == 12 * 55  # every ordered pair of sessions
    assert report["results"][1]["soft"]["recall@5"] == 1.0  # 5 places in each database
    # networks by the input rule: the budget at the image's own aspect (GRIEF 1024x384, 8:3)
    assert report["results"][3]["resolution"] == [192, 64]
    assert report["results"][2]["resolution"] == [160, 96]  # Gardens Point 960x540
    for mean in report["means"]:
        rows = [r for r in report["results"] if r["model"] == mean["model"]]
        assert mean["soft"]["recall@1"] == pytest.approx(np.mean([r["soft"]["recall@1"] for r in rows]))
    assert len(messages) == 2 and all("encoded in" in m for m in messages)  # both sets in one pass per model
    table = markdown_table(report)
    assert table.count("\n") == 1 + 4 + 2 and "**mean over 2 sets**" in table


def test_pooled_recall_matches_structvpr_eval(two_models, shared):
    """The pooled GRIEF figure is the query-weighted mean of `structvpr eval`'s per-database results."""
    report, _, _ = two_models
    encoder = load_encoder("raw-pixel")
    per_session = [evaluate_place_set(encoder, ps, ks=(1, 5, 10))["soft"]["recall@1"]
                   for ps in grief_seasons(shared / "data" / "grief_seasons", "test")]
    assert report["results"][1]["soft"]["recall@1"] == pytest.approx(np.mean(per_session))
    viewpoint = evaluate_place_set(encoder, SMALL_SETS[0].load(shared / "data")[0], ks=(1, 5, 10))
    for gt in ("soft", "hard"):
        for k in (1, 5, 10):
            assert report["results"][0][gt][f"recall@{k}"] == pytest.approx(viewpoint[gt][f"recall@{k}"])


def test_rerun_reads_the_cache(two_models, shared):
    report, cache, _ = two_models
    assert len(list(cache.glob("*.npy"))) == 2  # one per model
    messages = []
    again = run_benchmark(["raw-pixel", "random-mobilenetv2"], SMALL_SETS, data_root=shared / "data",
                          cache_dir=cache, input_pixels=SMALL_BUDGET, log=messages.append)
    assert all(m.endswith("cached") for m in messages)
    assert again["results"] == report["results"]


def test_paired_difference_to_a_reference_model(two_models, shared):
    _, cache, _ = two_models
    report = run_benchmark(["raw-pixel", "random-mobilenetv2"], SMALL_SETS, data_root=shared / "data",
                           cache_dir=cache, reference="raw-pixel", input_pixels=SMALL_BUDGET, log=lambda _: None)
    for r in report["results"]:  # per-query top-1 hits agree with the pooled recall
        assert len(r["top1_soft"]) == r["soft"]["num_evaluated"]
        assert r["top1_soft"].count("1") / len(r["top1_soft"]) == pytest.approx(r["soft"]["recall@1"])
    [diff] = report["differences"]
    assert (diff["model"], diff["reference"], diff["sequence_length"]) == ("random-mobilenetv2", "raw-pixel", 1)
    means = {m["model"]: m["soft"]["recall@1"] for m in report["means"]}
    assert diff["difference"] == pytest.approx(means["random-mobilenetv2"] - means["raw-pixel"])
    low, high = diff["ci95"]
    assert low < diff["difference"] < high and high - low < 0.5
    same = paired_difference(report["results"], "raw-pixel", "raw-pixel")
    assert same["difference"] == 0 and same["ci95"] == [0, 0]  # paired: identical hits never differ
    table = markdown_table(report)
    assert "minus raw-pixel-64x32-p8's" in table and "| random-mobilenetv2-seed0 |" in table.split("minus")[1]


def test_each_inference_path_has_its_own_cache_entry(two_models, shared):
    """bf16 descriptors are not fp32's: a bf16 run must encode afresh, never read the fp32 cache."""
    report, cache, _ = two_models
    messages = []
    bf16 = run_benchmark(["random-mobilenetv2"], SMALL_SETS, data_root=shared / "data", cache_dir=cache,
                         runtime="openvino", precision="bf16", input_pixels=SMALL_BUDGET, log=messages.append)
    assert len(messages) == 1 and "encoded in" in messages[0]
    assert bf16["encodings"][0]["inference"] == "openvino bf16"
    assert report["encodings"][-1]["inference"] == "onnxruntime fp32"  # the scoreboard's default
    assert len(list(cache.glob("*.npy"))) == 3


def test_checkpoints_with_one_file_name_never_share_cached_descriptors(tmp_path, shared):
    """runs/seed*/stage2-*/best.pt: same name, same size, different weights -> different results."""
    from structvpr_core.models.branches import ModelConfig, RGBBranch
    from structvpr_core.models.checkpoint import save_checkpoint

    for seed in (0, 1):
        torch.manual_seed(seed)
        save_checkpoint(tmp_path / f"seed{seed}" / "best.pt", RGBBranch(ModelConfig("rgb", (160, 96))))
    messages = []
    report = run_benchmark([str(tmp_path / "seed0" / "best.pt"), str(tmp_path / "seed1" / "best.pt")],
                           SMALL_SETS[:1], data_root=shared / "data", cache_dir=tmp_path / "cache",
                           log=messages.append)
    assert all("encoded in" in m for m in messages), messages
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2
    table = markdown_table(report)  # both are "best": the table names them by path
    assert all(f"| {tmp_path / f'seed{s}' / 'best.pt'} |" in table for s in (0, 1))


def test_descriptor_cache_key_covers_every_network_and_runtime_source(tmp_path, monkeypatch):
    """A fix in a module that only shapes the network (e.g. a padding hook) must not read stale descriptors."""
    import shutil

    from structvpr_core.evaluation import benchmark

    for package in benchmark.DESCRIPTOR_SOURCE_PACKAGES:
        shutil.copytree(benchmark.PACKAGE_ROOT / package, tmp_path / package)
    monkeypatch.setattr(benchmark, "PACKAGE_ROOT", tmp_path)
    encoder = load_encoder("raw-pixel")
    before = benchmark.model_fingerprint(encoder)
    assert benchmark.model_fingerprint(encoder) == before  # deterministic
    padding = tmp_path / "models" / "tflite_mobilenetv2.py"
    padding.write_text(padding.read_text() + "\n# changed\n")
    assert benchmark.model_fingerprint(encoder) != before


def test_cli_writes_table_json_and_plot(tmp_path, capsys):
    out = tmp_path / "docs" / "bench.md"
    sets = [s.name for s in EVAL_SETS[1:]]
    assert main(["benchmark", "--models", "raw-pixel", "--sets", *sets, "--out", str(out),
                 "--cache-dir", str(tmp_path / "cache"), "--missions", "none", "--no-rerank"]) == 0
    text = out.read_text()
    assert "| gardenspoint night_right->day_right | raw-pixel-64x32-p8 | 64x32 |" in text
    assert "![R@1](bench.png)" in text and "**mean over 3 sets**" in text
    assert "`structvpr benchmark --models raw-pixel --sets 'gardenspoint day_left->day_right' " in text
    assert "--missions none --no-rerank" in text
    report = json.loads(out.with_suffix(".json").read_text())
    assert [r["set"] for r in report["results"]] == sets
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    assert "R@1 soft" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--sequence-lengths", "0,5"], "distinct integers >= 1"),
    (["--sequence-lengths", "1,x"], "comma-separated integers"),
    (["--models", "imagenet-nothing"], "neither a checkpoint file nor a baseline"),
    (["--batch-size", "0"], "--batch-size must be >= 1"),
    (["--models", "imagenet-lite0", "--resize", "1x1"], "each side must be >= 32"),
    (["--models", "imagenet-lite0", "--resize", "wide"], "--resize: size must look like WxH"),
    (["--models", "raw-pixel", "--reference", "imagenet-mobilenetv2"], "--reference 'imagenet-mobilenetv2' is not one of"),
])
def test_bad_options_give_one_line_errors(tmp_path, capsys, args, message):
    assert main(["benchmark", *args, "--out", str(tmp_path / "b.md")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "b.md").exists()


def test_sequence_lengths_use_the_nodes_matcher_on_traversals_only(shared, tmp_path):
    """L > 1 rows exist only for sequential sets and equal the core matcher's ranking."""
    from structvpr_core.retrieval.sequence import SequenceConfig, normalization_for, sequence_recall

    report = run_benchmark(["raw-pixel"], SMALL_SETS, sequence_lengths=(1, 5), data_root=shared / "data",
                           cache_dir=tmp_path, log=lambda _: None)
    rows = {(r["set"], r["sequence_length"]): r for r in report["results"]}
    assert set(rows) == {("gardenspoint viewpoint", 1), ("gardenspoint viewpoint", 5), ("grief seasons", 1)}
    ps = SMALL_SETS[0].load(shared / "data")[0]
    enc = load_encoder("raw-pixel")
    from structvpr_core.runtime.encoder import encode_paths

    q, db = encode_paths(enc, ps.queries), encode_paths(enc, ps.database)
    expected = sequence_recall(q, db, ps.positives, lengths=(5,), ns=(1, 5, 10),
                               config=SequenceConfig(normalization=normalization_for("raw-pixel")))[5]
    assert rows[("gardenspoint viewpoint", 5)]["soft"]["recall@1"] == pytest.approx(expected[1])


def test_rerank_by_verified_inliers_lifts_single_image_recall(shared, tmp_path):
    """Gardens Point viewpoint change at the node's verification settings: raw pixels' top 5 re-ranked."""
    from structvpr_core.loop_closure.candidates import LoopClosureConfig

    geometry = LoopClosureConfig().geometry
    report = run_benchmark(["raw-pixel"], SMALL_SETS[:1], data_root=shared / "data", cache_dir=tmp_path,
                           rerank=geometry)
    [row] = report["results"]
    rr = row["reranked"]
    assert rr["num_evaluated"] == 25 and rr["recall@1_global"] == row["soft"]["recall@1"]
    # the global top 5 often holds the place its top 1 misses; inliers find it
    assert rr["recall@1_reranked"] >= rr["recall@1_global"] + 0.12  # measured 0.56 -> 0.76
    assert rr["recall@1_reranked"] <= row["soft"]["recall@5"]  # re-ranking only reorders the top 5
    from structvpr_core.evaluation.benchmark import reranked_table

    table = reranked_table(report)
    assert f"{100 * rr['recall@1_global']:.1f} -> {100 * rr['recall@1_reranked']:.1f}" in table
