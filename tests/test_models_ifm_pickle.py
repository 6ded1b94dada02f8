"""A weights file holding pickled code is refused whole: nothing runs, the message names the
file, says why, and how to convert a trusted file to safetensors (never to switch off the
guard in advise)."""

from __future__ import annotations

from pathlib import Path

import torch
from fabricate import tiny_config, ucf_tree

from advise.cli import main


class WritesMarker:
    """Unpickling this calls `exec`, which writes a marker file: code run on load."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


def test_a_pickle_with_code_is_refused_without_running_it(tmp_path, capsys):
    marker = tmp_path / "ran.txt"
    weights = tmp_path / "evil.pt"
    torch.save({"blocks.0.weight": torch.zeros(3), "hook": WritesMarker(marker)}, weights)
    config = tiny_config(tmp_path / "c.yaml", data={"root": str(ucf_tree(tmp_path / "tree"))})
    args = ["--set", "ifm.random_init=false", "--set", f"ifm.weights={weights}"]
    code = main(["pretrain", "--config", str(config), *args, "--out", str(tmp_path / "run")])
    assert code == 2
    assert not marker.exists() and not (tmp_path / "run").exists()
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"advise: error: IFM weights file {weights} contains code")
    assert "(it refers to exec)" in err
    assert "advise will not run it" in err
    assert "torch.load(" in err and "safetensors.torch.save_file(sd, 'weights.safetensors')" in err
    assert err.endswith("--set ifm.weights=weights.safetensors")
    assert "Re-running" not in err
