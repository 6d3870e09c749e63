"""The benchmark harnesses run and report what they promise, on tiny models (no timing asserted)."""

import json
from pathlib import Path

import pytest

from benchmarks import inference
from benchmarks.common import markdown_table


def test_inference_harness_on_tiny_generator(tmp_path, three_generators, capsys):
    out = tmp_path / "inf.json"
    rows = inference.main(
        [
            "--generator",
            str(three_generators[0]),
            "--backends",
            "eager",
            "onnxruntime",
            "triton",
            "triton-shm",
            "--batches",
            "1",
            "2",
            "--concurrency",
            "1",
            "2",
            "--requests",
            "2",
            "--min-seconds",
            "0",
            "--warmup",
            "1",
            "--json",
            str(out),
            "--plot",
            str(tmp_path / "inf.png"),
        ]
    )
    data = json.loads(out.read_text())
    assert data["gmac_per_image"] > 0 and data["floor_ms_per_image"] > 0
    got = {(r["backend"], r["batch"], r["concurrency"]) for r in data["records"]}
    assert got == {
        ("eager", 1, 1),
        ("eager", 2, 1),
        ("onnxruntime", 1, 1),
        ("onnxruntime", 2, 1),
        ("triton", 1, 1),
        ("triton", 1, 2),
        ("triton", 2, 1),  # b2 x c2 > max batch 2: skipped
        ("triton-shm", 1, 1),
        ("triton-shm", 2, 1),
    }
    for r in data["records"]:
        assert r["p50_ms"] <= r["p90_ms"] <= r["p95_ms"] <= r["p99_ms"]
        assert r["images_per_s"] > 0 and r["errors"] == 0
        assert {
            "resolution",
            "batch",
            "concurrency",
            "images_per_s",
            "floor_share",
            "speedup_vs_eager",
        } <= set(r)
    eager = {r["batch"]: r for r in data["records"] if r["backend"] == "eager"}
    for r in data["records"]:  # each ratio against the eager row of its own batch, recomputed
        assert r["speedup_vs_eager"] == pytest.approx(r["images_per_s"] / eager[r["batch"]]["images_per_s"])
        assert r["ms_per_image"] == pytest.approx(1000 / r["images_per_s"])
        assert r["floor_share"] == pytest.approx(data["floor_ms_per_image"] / r["ms_per_image"])
    triton = next(r for r in data["records"] if r["backend"] == "triton" and r["batch"] == 2)
    assert triton["response_bytes"] == 2 * 32 * 32 * 3 and triton["request_bytes"] == 2 * 33 * 4
    assert (tmp_path / "inf.png").stat().st_size > 1000
    shares = inference.transfer_shares(data["records"])
    p50 = {(r["backend"], r["batch"], r["concurrency"]): r["p50_ms"] for r in data["records"]}
    assert shares == {
        b: pytest.approx((p50[("triton", b, 1)] - p50[("triton-shm", b, 1)]) / p50[("triton", b, 1)])
        for b in (1, 2)
    }
    printed = capsys.readouterr().out
    assert f"batch 1: the response's gRPC transfer is {100 * shares[1]:.0f}% of the triton p50" in printed
    assert "| backend | batch | conc |" in printed.splitlines()[-len(rows) - 2]


def test_macs_counted_like_hand_computation():
    """Every multiply-accumulate of an 8-px generator, counted by hand: a count that leaves out
    any term (the ToRGBs, the blurs, the skip upsampling, the modulations) is off."""
    from nada_train.checkpoints import random_generator

    g = random_generator(8, style_dim=8, n_mlp=1, channel_multiplier=1)
    c, s = 512, 8  # width at 4 and 8 px, style_dim
    # conv, 3x3 at 8x8
    convs = (
        c * c * 9 * 16  # conv1, 3x3 at 4x4
        + c * c * 9 * 16  # up-conv: transposed 3x3 over the 4x4 input
        + c * c * 9 * 64
    )
    to_rgb = c * 3 * 16 + c * 3 * 64
    blurs = c * 16 * 64 + 3 * 16 * 64  # 4x4 blur after the up-conv at 8x8; the RGB skip's upsampling filter
    mapping = s * s  # one mapping layer
    modulation = 5 * s * c  # conv1, to_rgb1, the two convs, to_rgb: style_dim -> in_channel each
    demodulation = 3 * c * c  # (s^2) @ (sum_k w^2)^T for the three demodulated convs
    want = convs + to_rgb + blurs + mapping + modulation + demodulation
    assert inference.macs_per_image(g) == want


def test_markdown_table():
    t = markdown_table([{"a": 1, "b": 2.5}, {"a": 10, "b": 1234.5}], [("a", "A"), ("b", "B")])
    assert t.splitlines() == ["| A | B |", "|---|---|", "| 1 | 2.500 |", "| 10 | 1,234.5 |"]


def test_load_harness_counts_and_recovers_under_a_killed_model(tmp_path, three_generators):
    """3 clients x 16 requests, a third of them bad, one model process killed a third of the way:
    every bad request refused and counted by kind, nada-serve's recovery read from its log, no good
    request lost after it, the server's memory measured."""
    from benchmarks import load
    from nada_export.pipeline import export

    repo = tmp_path / "repo"
    export(
        [str(p) for p in three_generators[1:]], repo, names=["sketch", "neon"], max_batch=2, progress=False
    )
    out = tmp_path / "load.json"
    summary = load.main(
        [
            "--repository",
            str(repo),
            "--clients",
            "3",
            "--requests",
            "16",
            "--bad",
            "0.34",
            "--fault",
            "kill-model",
            "--fault-at",
            "0.34",
            "--fault-model",
            "neon_synthesis",
            "--json",
            str(out),
        ]
    )
    assert json.loads(out.read_text())["requests"] == summary["requests"] == 48
    assert summary["good"] + summary["bad"] == 48 and summary["bad"] >= 10
    assert summary["bad_refused"] == summary["bad"] and summary["bad_accepted"] == 0
    assert (
        summary["bad_refused_by_kind"] == summary["bad_by_kind"]
        and sum(summary["bad_by_kind"].values()) == summary["bad"]
    )
    assert all(summary["bad_by_kind"][kind] > 0 for kind in ("nan", "shape", "dtype", "batch", "model"))
    assert summary["good_answered"] + summary["good_failed"] == summary["good"]
    assert summary["good_failed_before_fault"] == 0 and summary["good_failed_after_recovery"] == 0
    assert 0 < summary["recovery_s"] <= summary["detected_and_recovered_s"] < 30
    assert summary["good_after_recovery"] > 0
    assert summary["rss_before_mib"] > 50 and summary["rss_after_mib"] > 50
    assert summary["nada_serve_exit_status"] == 0


def test_load_summary_by_hand():
    from benchmarks.load import summarise

    rec = lambda kind, start, seconds, ok: {"kind": kind, "start": start, "seconds": seconds, "ok": ok}  # noqa: E731
    records = [
        rec("good", 0.0, 0.010, True),
        rec("good", 1.0, 0.030, True),
        rec("nan", 1.5, 0.001, False),
        rec("good", 2.0, 0.5, False),
        rec("batch", 2.5, 0.001, True),
        rec("good", 4.0, 0.020, True),
    ]
    s = summarise(records, wall=3.0, fault_time=1.8, back_time=3.0)
    assert (
        s["good"],
        s["good_answered"],
        s["good_failed"],
        s["bad"],
        s["bad_refused"],
        s["bad_accepted"],
    ) == (4, 3, 1, 2, 1, 1)
    assert s["p50_ms"] == pytest.approx(20.0) and s["requests_per_s"] == pytest.approx(2.0)
    assert s["bad_refused_by_kind"]["nan"] == 1 and s["bad_refused_by_kind"]["batch"] == 0
    assert (
        s["good_failed_before_fault"],
        s["good_failed_until_recovered"],
        s["good_after_recovery"],
        s["good_failed_after_recovery"],
    ) == (0, 1, 1, 0)


def test_training_comparison_measures_each_variant_against_the_first(tiny_clip_spec, monkeypatch):
    """--compare: deviations and image PSNR against the first variant, and the yardstick row (the first
    variant from another seed) last. Checked by hand from the rows' own loss curves."""
    from benchmarks import training
    from nada_train.checkpoints import save_safetensors
    from tests.conftest import tiny_generator

    def small_checkpoint(
        folder, size
    ):  # the bookkeeping, not the speed: a narrow generator instead of config-f
        save_safetensors(tiny_generator(size=size), Path(folder) / "g.safetensors")
        return Path(folder) / "g.safetensors"

    monkeypatch.setattr(training, "random_checkpoint", small_checkpoint)
    rows = training.compare(16, [tiny_clip_spec], "auto", 3, 1, "cpu", ["fp32:off", "bf16:off"])
    assert [(r["precision"], r["compile"], r["seed"]) for r in rows] == [
        ("fp32", "off", 2),
        ("bf16", "off", 2),
        ("fp32", "off", training.NOISE_SEED),
    ]
    ref = rows[0]
    assert ref["max_loss_dev"] == 0 and ref["image_psnr_db"] == float("inf") and ref["same_layers"] == "3/3"
    for r in rows[1:]:
        dev = [abs(a - b) for a, b in zip(r["losses"], ref["losses"])]
        assert r["max_loss_dev"] == max(dev) and r["mean_loss_dev"] == pytest.approx(sum(dev) / 3)
        assert r["x_speed"] == pytest.approx(ref["s_per_it"] / r["s_per_it"])
    assert rows[1]["max_loss_dev"] > 0 and rows[1]["image_psnr_db"] < float("inf")  # bf16 really ran
    # another seed moves more
    assert rows[2]["max_loss_dev"] > 0 and rows[2]["image_psnr_db"] < rows[1]["image_psnr_db"]


def test_encoder_benchmark_measures_each_graph_against_the_decoders_synthesis(tmp_path):
    """Eager rows for e4e, ReStyle-e4e and the synthesis, each ratio recomputed from its rows; the
    encoders are the authors' layout, read back by load_encoder."""
    from benchmarks import encoder

    out = tmp_path / "enc.json"
    args = ["--size", "8", "--backends", "eager", "--batches", "1", "2", "--restyle-batches", "1"]
    encoder.main([*args, "--requests", "1", "--min-seconds", "0", "--warmup", "0", "--json", str(out)])
    rows = json.loads(out.read_text())["records"]
    assert {(r["subject"], r["batch"]) for r in rows} == {
        ("e4e", 1),
        ("e4e", 2),
        ("restyle_e4e", 1),
        ("synthesis", 1),
        ("synthesis", 2),
    }
    synthesis = {r["batch"]: r["p50_ms"] for r in rows if r["subject"] == "synthesis"}
    for r in rows:
        assert r["speedup_vs_eager"] == 1.0 and r["resolution"] == 8
        assert r["x_synthesis"] == pytest.approx(r["p50_ms"] / synthesis[r["batch"]])
