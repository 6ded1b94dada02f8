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
        "cpu", variants=["mini", "mini-store", "r3d50"], isolate=False, repeats=2, **TINY
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
        # two passes of one timed iteration each, pooled
        assert entry["passes"] == 2 and len(entry["median_step_seconds_per_pass"]) == 2
        assert entry["step_seconds"] == entry["median_step_seconds_per_pass"]
        assert entry["median_step_seconds"] == pytest.approx(sum(entry["step_seconds"]) / 2)
        assert entry["tmm_precision"] == "fp32"
        assert entry["peak_memory_bytes"] >= 0 and "VmHWM" in entry["memory_method"]
        assert 0.0 <= entry["data_share"] <= 1.0

    online, store, r3d = (result["variants"][name] for name in ("mini", "mini-store", "r3d50"))
    assert online["ifm_macs"] > 0 and store["ifm_macs"] == 0  # the store paid it once, before
    assert store["ifm_macs_per_clip_at_extraction"] == online["ifm_macs"]
    assert store["trainable_params"] == online["trainable_params"]
    assert store["trainable_macs"] == online["trainable_macs"]
    assert store["store"]["videos"] > 0 and store["store"]["extract_seconds"] > 0
    assert online["ifm"] == "mini" and online["ifm_precision"] == "fp32"  # the demo preset's
    assert len(online["ifm_forward_seconds"]) == 2 and min(online["ifm_forward_seconds"]) > 0
    assert store["ifm_forward_seconds"] == [] and r3d["ifm_forward_seconds"] == []
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
    # the speeds per MAC behind the speed-up
    ifm_seconds = sum(online["ifm_forward_seconds"]) / 2  # the median of two
    compute = comparison["store_compute_seconds"]
    assert comparison["ifm_forward_seconds"] == pytest.approx(ifm_seconds)
    assert comparison["ifm_flops_per_second"] == pytest.approx(2 * ifm * 2 / ifm_seconds)
    assert comparison["tmm_step_flops_per_second"] == pytest.approx(2 * tmm_step * 2 / compute)
    assert comparison["ifm_over_tmm_speed"] == pytest.approx(
        comparison["ifm_flops_per_second"] / comparison["tmm_step_flops_per_second"]
    )
    assert comparison["speedup_at_measured_speeds"] == pytest.approx(
        (ifm_seconds + compute) / compute
    )
    goal = result["goals"]["store_speedup_at_least_80pct"]["mini-store"]
    assert goal["training_ratio_80pct"] == (comparison["speedup_over_mac_ratio_training"] >= 0.8)


def test_bench_markdown_names_the_run(record):
    result, markdown = record
    assert result["environment"]["device"] in markdown
    assert "randomly initialised" in markdown
    assert "R3D-50 end to end" in markdown and "31.8" in markdown  # the paper's beside ours
    assert "2 clips of 4 frames" in markdown
    assert "Why the speed-up is not the MACs ratio" in markdown
    assert "2 passes over the variants" in markdown and "trains in fp32" in markdown


def test_bench_bf16_trainable_part_is_recorded(tmp_path):
    settings = bench.default_settings(
        "cpu", variants=["mini-store", "r3d50"], isolate=False, tmm_precision="bf16", **TINY
    )
    result = bench.run_bench(settings, tmp_path)
    for entry in result["variants"].values():
        assert "error" not in entry and entry["tmm_precision"] == "bf16"
        assert entry["last_loss"] == entry["last_loss"]  # not NaN
    assert "trains under bf16 autocast" in (tmp_path / "bench.md").read_text()


def test_bench_store_in_memory_trains_on_the_same_tokens(tmp_path):
    # the store path read as `ablate` and `demo` train: held in memory, no worker processes
    settings = bench.default_settings("cpu", variants=["mini-store"], isolate=False, **TINY)
    config = bench.variant_config("mini-store", bench.replace(settings, in_memory=True), tmp_path)
    assert config.data.in_memory
    result = bench.run_bench(bench.replace(settings, in_memory=True), tmp_path / "memory")
    on_disk = bench.run_bench(settings, tmp_path / "disk")
    held, read = result["variants"]["mini-store"], on_disk["variants"]["mini-store"]
    assert "error" not in held and held["median_step_seconds"] > 0
    assert held["last_loss"] == read["last_loss"]  # the same batches, the same step
    assert "tokens held in memory" in (tmp_path / "memory" / "bench.md").read_text()


def test_store_variants_of_one_ifm_share_a_store():
    settings = bench.default_settings("cpu")
    assert "a-l14-256-store" in settings.variants and "a-b16-2048-store" in settings.variants
    key = bench._store_key
    assert key("a-b16-256-store", settings) == key("a-b16-2048-store", settings)
    assert key("a-b16-256-store", settings) != key("a-l14-256-store", settings)
    for name in ("a-b16-256-store", "a-l14-256-store", "a-b16-2048-store"):
        online = bench.VARIANTS[name].online
        assert bench.VARIANTS[online].preset == bench.VARIANTS[name].preset


def test_bench_rejects_bad_repeats_and_precision(tmp_path):
    with pytest.raises(bench.ConfigError, match="repeats"):
        bench.run_bench(bench.default_settings("cpu", repeats=0), tmp_path)
    with pytest.raises(bench.ConfigError, match="tmm_precision"):
        bench.run_bench(bench.default_settings("cpu", tmm_precision="fp16"), tmp_path)


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
    assert (settings.tmm_precision, settings.repeats) == ("fp32", 1)
    assert main([*arguments, "--ifm-online", "mini", "--in-process", "--size", "32"]) == 0
    assert seen["s"].variants == bench.DEFAULT_VARIANTS["mini"] and not seen["s"].isolate
    assert seen["s"].size == 32
    assert main([*arguments, "--tmm-precision", "bf16", "--repeats", "3"]) == 0
    assert (seen["s"].tmm_precision, seen["s"].repeats) == ("bf16", 3)
    assert not seen["s"].in_memory
    assert main([*arguments, "--in-memory"]) == 0 and seen["s"].in_memory


def test_bench_unknown_variant_is_a_usage_error(tmp_path, capsys):
    arguments = ["bench", "--device", "cpu", "--variants", "r3d-101", "--out", str(tmp_path)]
    assert main(arguments) == 2
    assert "unknown bench variant" in capsys.readouterr().err
