"""`advise summary` reproduces the paper's Tables 2 and 3 (PAPER.md) within 1%."""

import json

import pytest

from advise.cli import main
from advise.config import load_config, preset_names
from advise.runs import summary

# (override, params in millions, multiply-accumulates in G) for ViT-B/16 tokens of 8x224x224
TABLES = [
    ("tmm.blocks=1", 1.84, 2.88),
    ("tmm.blocks=2", 2.95, 4.62),
    ("tmm.blocks=4", 5.18, 8.12),
    ("tmm.blocks=6", 7.41, 11.61),
    ("tmm.blocks=8", 9.63, 15.11),
    ("tmm.hidden=64", 0.94, 1.47),
    ("tmm.hidden=256", 1.84, 2.88),
    ("tmm.hidden=512", 4.07, 6.37),
    ("tmm.hidden=1024", 12.06, 18.91),
    ("tmm.hidden=2048", 42.21, 66.18),
]


@pytest.mark.parametrize("override, params_m, gmacs", TABLES)
def test_paper_tmm_matches_tables_2_and_3(override, params_m, gmacs, capsys):
    assert main(["summary", "--config", "paper-tmm", "--set", override, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["token_grid"] == [768, 8, 14, 14]
    assert result["tmm_params"] / 1e6 == pytest.approx(params_m, rel=0.01)
    assert result["tmm_macs"] / 1e9 == pytest.approx(gmacs, rel=0.01)
    assert result["total_macs"] > result["tmm_macs"] + 100e9  # ViT-B/16 on 8 frames
    assert result["frozen_params"] > 80e6


def test_temporal_kernel_3_costs_more():
    paper = summary(load_config("paper-tmm"))
    kernel3 = summary(load_config("paper-tmm", ["tmm.temporal_kernel=3"]))
    # only the first 1x1x1 convolution grows: 768 x 256 weights become 3x as many
    assert kernel3["tmm_params"] - paper["tmm_params"] == 2 * 768 * 256


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_summarises_offline(name):
    result = summary(load_config(name))
    assert result["tmm_macs"] >= 0 and result["trainable_params"] > 0
