"""One table picks the temporal module: config kinds, sections and checkpoints agree with it."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest
from fabricate import tiny_config, ucf_tree

from advise.cli import main
from advise.config import CHOICES, TMM_SECTIONS, ConfigError, TMMConfig, load_config
from advise.models.registry import TMM_KINDS


def test_the_config_allows_exactly_the_tables_kinds():
    assert set(CHOICES["tmm.kind"]) == set(TMM_KINDS)
    hints = typing.get_type_hints(TMMConfig)
    sections = {name for name, kind in hints.items() if dataclasses.is_dataclass(kind)}
    assert sections == set(TMM_SECTIONS) == set(TMM_KINDS) - {"none"}


def test_old_flat_keys_still_set_the_bottleneck():
    old = load_config("demo", ["tmm.hidden=48", "tmm.blocks=2"]).tmm.bottleneck
    assert (old.hidden, old.blocks) == (48, 2)
    nested = load_config(None, []).replace({"tmm": {"out": 64}}).tmm.bottleneck  # a saved dict
    assert nested.out == 64


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["tmm.kind=lstm"], "tmm.kind must be one of bottleneck, .*none"),
        (["tmm.conv3d.hidden=3"], "tmm.conv3d.hidden is set but tmm.kind=bottleneck"),
        (["tmm.kind=none", "tmm.bottleneck.hidden=7"], "tmm.kind=none, which reads no section"),
        (["tmm.bottleneck.depth=3"], "tmm.bottleneck has: blocks, hidden, out, temporal_kernel"),
    ],
)
def test_a_kind_reads_only_its_own_section(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config("demo", overrides)


@pytest.mark.parametrize("kind", ["none", "bottleneck"])
def test_an_override_may_pick_another_kind_than_the_preset(kind):
    """demo sets tmm.bottleneck.*; the demo's own avg-pool arm sets tmm.kind=none over it."""
    assert load_config("demo", {"tmm.kind": kind}).tmm.kind == kind
    assert load_config("demo", {"pretext.kind": "byol"}).pretext.kind == "byol"


def test_a_preset_may_pick_another_kind_than_its_base(tmp_path):
    child = tmp_path / "child.yaml"
    child.write_text("base: demo\ntmm:\n  kind: none\n")  # demo sets tmm.bottleneck.*
    assert load_config(str(child)).tmm.kind == "none"
    child.write_text("base: demo\ntmm:\n  kind: none\n  bottleneck:\n    hidden: 7\n")
    with pytest.raises(ConfigError, match="tmm.bottleneck.hidden is set but tmm.kind=none"):
        load_config(str(child))


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tmm-table")
    config = tiny_config(root / "config.yaml", data={"root": str(ucf_tree(root / "tree"))})
    assert main(["finetune", "--config", str(config), "--out", str(root / "ft")]) == 0
    return config, root / "ft" / "checkpoints" / "last.safetensors"


@pytest.mark.parametrize("command", ["evaluate", "init", "resume"])
def test_a_checkpoint_of_another_kind_is_exit_2_naming_both(finetuned, tmp_path, command, capsys):
    config, checkpoint = finetuned
    other = ["--set", "tmm.kind=none"]
    if command == "evaluate":
        args = ["evaluate", "--config", str(config), *other, "--ckpt", str(checkpoint)]
    elif command == "init":
        args = ["finetune", "--config", str(config), *other, "--init", str(checkpoint)]
        args += ["--out", str(tmp_path / "init")]
    else:
        args = ["finetune", "--config", str(config), *other, "--resume"]
        args += ["--out", str(checkpoint.parent.parent)]
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "tmm.kind=bottleneck" in err and "tmm.kind=none" in err, err
    assert "shape" not in err
