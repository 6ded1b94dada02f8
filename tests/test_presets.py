"""Every built-in preset validates, builds (IFM on the meta device) and documents its target."""

from __future__ import annotations

import json
import re

import pytest

from advise.cli import main
from advise.config import load_config, preset_description, preset_names
from advise.runs import summary

PRESETS = preset_names()
PAPER_PRESETS = [name for name in PRESETS if name not in ("default", "demo", "paper-tmm")]
DATASETS = ("ucf101", "hmdb51", "diving48", "ssv2", "k400")


def test_the_paper_runs_have_presets():
    expected = {
        "prp-ucf101", "prp-k400", "prp-diving48", "ft-ucf101", "ft-hmdb51", "ft-diving48",
        "ft-ssv2", "lp-ucf101", "a-b16-256", "a-l14-256", "a-b16-2048", *DATASETS,
    }  # fmt: skip
    expected |= {f"t4-{ifm}-{data}" for ifm in ("clip", "mae", "dinov2", "clip-mae",
                 "clip-dinov2") for data in ("ucf101", "diving48")}  # fmt: skip
    expected |= {f"t5-avgpool-{ifm}-{data}" for ifm in ("clip", "mae", "dinov2")
                 for data in ("ucf101", "diving48")}  # fmt: skip
    assert expected <= set(PRESETS)


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_builds_and_counts(name):
    config = load_config(name)
    result = summary(config)  # builds IFM + SFU + TMM + head on the meta device
    assert result["trainable_params"] > 0 and result["total_macs"] > result["ifm_macs"] > 0
    assert result["token_grid"][1] == config.data.num_frames
    if config.data.format == "ssv2":
        assert config.data.flip is False


@pytest.mark.parametrize("name", PAPER_PRESETS)
def test_paper_presets_name_their_target(name):
    text = preset_description(name)
    assert len(text) > 60
    # a paper number (e.g. 88.7), a protocol piece, or an explicit "no target"
    has_number = re.search(r"\d+\.\d", text)
    assert has_number or name in DATASETS or "no target" in text or "reports" in text, text


def test_paper_presets_follow_the_measured_protocol():
    """The paper's runs use its TMM as measured (kernel 1, out 1024) and its PRP recipe."""
    for name in ("prp-ucf101", "ft-ucf101", "t4-dinov2-diving48", "a-b16-2048"):
        config = load_config(name)
        assert (config.tmm.bottleneck.temporal_kernel, config.tmm.bottleneck.out) == (1, 1024)
        assert config.pretext.prp.speeds == (1, 2, 4, 8) and config.train.batch_size == 32
    assert load_config("prp-ucf101").train.epochs == 800
    assert load_config("t4-clip-mae-ucf101").ifm.name == "clip-l14+mae-l16"
    assert load_config("t5-avgpool-dinov2-diving48").tmm.kind == "none"
    probe = load_config("lp-ucf101")
    assert probe.tmm.frozen and probe.head.kind == "linear"
    for data in DATASETS:
        assert load_config(f"{data}").data.format == data


def test_summary_command_for_a_combined_ifm_preset(capsys):
    assert main(["summary", "--config", "t4-clip-mae-ucf101", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["token_grid"] == [2048, 8, 14, 14]  # 1024 + 1024 channels on MAE's grid


def test_base_lists_merge_left_to_right(tmp_path):
    first, second = tmp_path / "first.yaml", tmp_path / "second.yaml"
    first.write_text("tmm:\n  hidden: 64\n  blocks: 2\n")
    second.write_text("tmm:\n  hidden: 128\n")
    child = tmp_path / "child.yaml"
    child.write_text(f"base: [{first}, {second}]\ntmm:\n  out: 512\n")
    tmm = load_config(str(child)).tmm.bottleneck
    assert (tmm.hidden, tmm.blocks, tmm.out) == (128, 2, 512)
