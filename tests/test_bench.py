"""`advise bench` on tiny settings: the JSON it writes, its counts and ratios.

Times are measured by the benchmark and never asserted here: only that they exist and that
every ratio is computed from the numbers beside it.
"""

import json

import pytest

from advise import bench
from advise.cli import main
from advise.models.cost import count_params
from advise.models.r3d import R3D50

# mini IFM and R3D-50 on 2 clips of 4 x 32 x 32; a small matrix product for the peak
TINY = dict(batch=2, frames=4, size=32, iters=1, warmup=0, peak_size=256)


@pytest.fixture(scope="module")
def record(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    settings = bench.default_settings(
        "cpu", variants=["mini", "mini-store", "r3d50"], isolate=False, **TINY
    )
    result = bench.run_bench(settings, out)
    assert json.loads((out / "bench.json").read_text()) == json.loads(json.dumps(result))
    return result, (out / "bench.md").read_text()


def test_bench_json_structure_and_counts(record):
    result, _ = record
    assert set(result) >= {"settings", "environment", "variants", "comparisons", "matmul", "goals"}
    assert result["settings"]["batch"] == 2 and result["settings"]["frames"] == 4
    assert result["environment"]["device"] and result["environment"]["torch_threads"] >= 1
    assert result["matmul"]["mm_peak_flops_per_second"] > 0
    assert result["matmul"]["conv1x1_peak_flops_per_second"] > 0
    assert list(result["variants"]) == ["mini", "mini-store", "r3d50"]
    for entry in result["variants"].values():
        assert "error" not in entry
        assert entry["clip"] == [2, 4, 3, 32, 32]
        assert entry["trainable_params"] > 0 and entry["trainable_macs"] > 0
        assert entry["macs"] == entry["ifm_macs"] + entry["trainable_macs"]
        assert entry["step_macs"] == entry["ifm_macs"] + entry["trainable_training_macs"]
        # backward costs more than nothing and at most two more forward passes
        assert entry["trainable_macs"] < entry["trainable_training_macs"]
        assert entry["trainable_training_macs"] <= 3 * entry["trainable_macs"]
        assert len(entry["step_seconds"]) == 1 and entry["median_step_seconds"] > 0
        assert entry["peak_memory_bytes"] >= 0 and "VmHWM" in entry["memory_method"]
        assert 0.0 <= entry["data_share"] <= 1.0

    online, store, r3d = (result["variants"][name] for name in ("mini", "mini-store", "r3d50"))
    assert online["ifm_macs"] > 0 and store["ifm_macs"] == 0  # the store paid it once, before
    assert store["ifm_macs_per_clip_at_extraction"] == online["ifm_macs"]
    assert store["trainable_params"] == online["trainable_params"]
    assert store["trainable_macs"] == online["trainable_macs"]
    assert store["store"]["videos"] > 0 and store["store"]["extract_seconds"] > 0
    assert online["ifm"] == "mini" and online["ifm_precision"] == "fp32"  # the demo preset's
    assert r3d["trainable_params"] == count_params(R3D50(num_classes=4))


def test_bench_ratios_follow_the_numbers(record):
    result, _ = record
    variants = result["variants"]
    r3d = variants["r3d50"]
    for name in ("mini", "mini-store"):
        entry, ratios = variants[name], variants[name]["vs_r3d50"]
        assert ratios["time"] == pytest.approx(
            entry["median_step_seconds"] / r3d["median_step_seconds"]
        )
        assert ratios["memory"] == pytest.approx(
            entry["peak_memory_bytes"] / max(r3d["peak_memory_bytes"], 1)
        )
        assert ratios["params"] == pytest.approx(
            entry["trainable_params"] / r3d["trainable_params"]
        )
        assert ratios["macs"] == pytest.approx(entry["macs"] / r3d["macs"])
        assert ratios["step_macs"] == pytest.approx(entry["step_macs"] / r3d["step_macs"])
        goal = result["goals"]["cheaper_than_r3d50"][name]
        assert goal == {"time": ratios["time"] < 1, "memory": ratios["memory"] < 1}

    comparison = result["comparisons"]["mini-store"]
    online, store = variants["mini"], variants["mini-store"]
    ifm, tmm = online["ifm_macs"], store["trainable_macs"]
    tmm_step = store["trainable_training_macs"]
    speedup = online["median_step_seconds"] / store["median_step_seconds"]
    assert comparison["speedup"] == pytest.approx(speedup)
    assert comparison["mac_ratio_forward"] == pytest.approx((ifm + tmm) / tmm)
    assert comparison["mac_ratio_training"] == pytest.approx((ifm + tmm_step) / tmm_step)
    assert comparison["mac_ratio_training"] == pytest.approx(
        online["step_macs"] / store["step_macs"]
    )
    assert comparison["speedup_over_mac_ratio_forward"] == pytest.approx(
        speedup / comparison["mac_ratio_forward"]
    )
    flops = 2 * 3 * tmm * 2 / store["median_step_seconds"]  # 2 clips per step
    assert comparison["achieved_flops_per_second"] == pytest.approx(flops)
    assert comparison["fraction_of_matmul_peak"] == pytest.approx(
        flops / result["matmul"]["mm_peak_flops_per_second"]
    )
    assert comparison["fraction_of_conv1x1_peak"] == pytest.approx(
        flops / result["matmul"]["conv1x1_peak_flops_per_second"]
    )
    assert comparison["data_share"] == pytest.approx(store["data_share"])
    goal = result["goals"]["store_speedup_at_least_80pct"]["mini-store"]
    assert goal["training_ratio_80pct"] == (comparison["speedup_over_mac_ratio_training"] >= 0.8)


def test_bench_markdown_names_the_run(record):
    result, markdown = record
    assert result["environment"]["device"] in markdown
    assert "randomly initialised" in markdown
    assert "R3D-50 end to end" in markdown and "31.8" in markdown  # the paper's beside ours
    assert "2 clips of 4 frames" in markdown


def test_bench_variant_in_its_own_process(tmp_path):
    settings = bench.default_settings("cpu", variants=["mini"], **TINY)
    assert settings.isolate  # the default: one process per variant
    entry = bench.run_bench(settings, tmp_path)["variants"]["mini"]
    assert "error" not in entry and entry["median_step_seconds"] > 0
    assert entry["peak_memory_bytes"] > 0  # a fresh process: the model's memory shows


def test_cli_bench_options(tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(bench, "run_bench", lambda settings, out: seen.update(s=settings, o=out))
    arguments = ["bench", "--device", "cpu", "--frames", "4", "--out", str(tmp_path)]
    assert main(arguments) == 0
    settings = seen["s"]
    assert (settings.batch, settings.frames, settings.iters, settings.warmup) == (2, 4, 5, 2)
    assert settings.variants == bench.DEFAULT_VARIANTS["vit"] and settings.isolate
    assert seen["o"] == tmp_path
    assert main([*arguments, "--ifm-online", "mini", "--in-process", "--size", "32"]) == 0
    assert seen["s"].variants == bench.DEFAULT_VARIANTS["mini"] and not seen["s"].isolate
    assert seen["s"].size == 32


def test_bench_unknown_variant_is_a_usage_error(tmp_path, capsys):
    arguments = ["bench", "--device", "cpu", "--variants", "r3d-101", "--out", str(tmp_path)]
    assert main(arguments) == 2
    assert "unknown bench variant" in capsys.readouterr().err
