import json

import pytest

from advise.cli import main
from advise.config import Config
from advise.pretexts import build_pretext
from advise.report import plot_curves, read_history, results_table


def test_results_table_signs_dacc_and_marks_missing():
    table = results_table(
        {"temporal": {"scratch_top1": 50.0, "pretrained_top1": 56.5, "delta_acc": 6.5}},
        build_pretext(Config()),
    )
    header, rule, row = table.splitlines()
    assert "dAcc" in header and "PRP speed acc" in header and set(rule) <= {"|", "-", " "}
    assert "+6.5" in row and "56.5" in row and "| -" in row  # missing columns print "-"


def test_curves_figure_from_run_history(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    lines = [{"kind": "step", "step": 1, "lr": 0.1, "loss": 2.0},
             {"kind": "epoch", "epoch": 1, "step": 1, "loss": 1.5}]  # fmt: skip
    (run / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    history = read_history(run)
    assert history == [lines[1]]
    figure = plot_curves({"task": {"run": history}}, tmp_path / "curves.png")
    assert figure.stat().st_size > 1000


@pytest.mark.slow
def test_quick_demo_writes_results(tmp_path):
    """The whole demo, shortened (a few minutes: it trains the mini IFM in a fresh cache)."""
    assert main(["demo", "--quick", "--out", str(tmp_path / "demo")]) == 0
    results = json.loads((tmp_path / "demo" / "results.json").read_text())
    keys = {"prp_speed_acc", "scratch_top1", "pretrained_top1", "delta_acc", "avgpool_top1"}
    for task in ("spatial", "temporal"):
        assert keys | {"tmm_t1_top1"} <= results[task].keys()
    assert results["seconds"]["total"] > 0
    assert (tmp_path / "demo" / "report.md").exists()
    assert (tmp_path / "demo" / "training_curves.png").exists()
