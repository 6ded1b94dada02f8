"""Multi-layer IFM tokens (`ifm.layers`, `ifm.layer_merge`): several transformer blocks' patch
tokens, concatenated or averaged, sized everywhere from `embed_dim`, recorded in the feature
store and refused when a store was read from other blocks.

A random-init ViT-B/16 from the registry (the smallest registry ViT) at 32 px: a 2 x 2 grid.
"""

from __future__ import annotations

import json

import pytest
import torch
from fabricate import tiny_config, ucf_tree

from advise.cli import main
from advise.config import ConfigError, load_config
from advise.data.store import FeatureStore, StoreSpec
from advise.models.build import build_frozen_ifm, build_model
from advise.models.ifm import CombinedIFM, IFMLayersError, build_ifm

NAME, SIZE, WIDTH, DEPTH = "vit-b16", 32, 768, 12


def vit(**options):
    torch.manual_seed(0)  # the same random weights every time
    return build_ifm(NAME, img_size=SIZE, random_init=True, **options)


@pytest.fixture(scope="module")
def frames() -> torch.Tensor:
    return torch.randn(2, 3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


@pytest.fixture  # per test, after conftest's single_thread: the thread count changes the bits
def default_tokens(frames) -> torch.Tensor:
    return vit()(frames)


def test_default_layers_give_the_tokens_of_forward_features(frames, default_tokens):
    ifm = vit()
    assert ifm.layers is None and ifm.embed_dim == WIDTH
    # what FrozenIFM gave before layers existed: forward_features, prefix token dropped
    images = frames.flatten(0, 1)  # [B, T, 3, H, W] -> [B*T, 3, H, W]
    with torch.no_grad():
        features = ifm.model.forward_features(images)[:, 1:]  # [B*T, h*w, D]
    # [B*T, h*w, D] -> [B, T, h, w, D] -> [B, D, T, h, w]
    old = features.reshape(2, 3, 2, 2, WIDTH).permute(0, 4, 1, 2, 3)
    assert torch.equal(default_tokens, old)
    # the last block through the final norm is the same thing, bit for bit
    assert torch.equal(vit(layers=[-1])(frames), default_tokens)


def test_concat_and_mean_widths_and_values(frames, default_tokens):
    concat = vit(layers=[-4, -1])
    tokens = concat(frames)
    assert concat.embed_dim == 2 * WIDTH and tokens.shape == (2, 2 * WIDTH, 3, 2, 2)
    assert torch.equal(tokens[:, WIDTH:], default_tokens)  # in the order listed: -1 second
    early = vit(layers=[8])(frames)  # block 8 = -4
    assert torch.equal(tokens[:, :WIDTH], early)
    assert torch.equal(vit(layers=[-1, 8])(frames)[:, :WIDTH], default_tokens)

    mean = vit(layers=[8, -1], layer_merge="mean")
    averaged = mean(frames)
    assert mean.embed_dim == WIDTH and averaged.shape == (2, WIDTH, 3, 2, 2)
    torch.testing.assert_close(averaged, (early + default_tokens) / 2)
    assert averaged.dtype == torch.float32 and not averaged.requires_grad


def test_the_model_is_sized_from_the_merged_width(frames):
    config = load_config(
        "demo",
        [f"ifm.name={NAME}", f"ifm.img_size={SIZE}", "ifm.random_init=true",
         "ifm.layers=[0, 5, -1]", "tmm.bottleneck.hidden=8", "tmm.bottleneck.out=16",
         "head.hidden=16"],
    )  # fmt: skip
    ifm = build_frozen_ifm(config.ifm, torch.device("cpu"))
    assert ifm.embed_dim == 3 * WIDTH
    model = build_model(config, 4, ifm)
    assert model(frames).shape == (2, 4)


def test_combined_ifms_take_the_same_layers_in_each_part():
    with torch.device("meta"):
        combined = build_ifm("vit-b16+mae-b16", random_init=True, layers=[-2, -1])
    assert isinstance(combined, CombinedIFM)
    assert [part.block_indices for part in combined.parts] == [(10, 11), (10, 11)]
    assert combined.embed_dim == 2 * (2 * WIDTH) and combined.layers == (-2, -1)


@pytest.mark.parametrize("layers, message", [
    ([12], "block 12 is out of range; IFM 'vit-b16' has 12 blocks: 0 to 11, or -12 to -1"),
    ([0, -13], "block -13 is out of range; IFM 'vit-b16' has 12 blocks"),
    ([-1, 11], "names one block twice"),
])  # fmt: skip
def test_bad_indices_name_the_depth(layers, message):
    with torch.device("meta"), pytest.raises(IFMLayersError, match=message) as error:
        build_ifm(NAME, random_init=True, layers=layers)
    assert isinstance(error.value, ConfigError) and str(error.value).startswith("ifm.layers=")


def test_the_mini_convnet_has_no_blocks_to_choose_from():
    with torch.device("meta"), pytest.raises(IFMLayersError, match="'mini' .*no transformer"):
        build_ifm("mini", random_init=True, layers=[-1])


@pytest.mark.parametrize("override, message", [
    ("ifm.layers=[-1, -1]", "ifm.layers must be distinct"),
    ("ifm.layers=[1000]", "ifm.layers must each be in [-128, 127]"),
    ("ifm.layers=[]", "ifm.layers must be a non-empty list"),
    ("ifm.layer_merge=mean", "ifm.layer_merge=mean has no effect without ifm.layers"),
    ("ifm.layer_merge=max", "ifm.layer_merge must be one of concat, mean"),
])  # fmt: skip
def test_config_refuses_bad_layer_settings(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load_config("demo", [override])


def test_summary_of_a_convnet_with_layers_is_exit_2_naming_the_key(capsys):
    argv = ["summary", "--config", "demo", "--json", "--set", "ifm.layers=[-1]"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ifm.layers" in err and "'mini'" in err


def test_an_old_store_spec_without_layers_reads_as_the_last_block():
    spec = StoreSpec.from_dict({
        "ifm": NAME, "weights_hash": "0" * 64, "random_init": True, "img_size": SIZE,
        "precision": "fp32", "interpolation": "bicubic", "views": 1, "frame_stride": 1,
        "dtype": "fp16", "spatial": None, "channels": None, "token_shape": [WIDTH, 2, 2],
    })  # fmt: skip
    assert spec.layers is None and spec.layer_merge == "concat"
    with_layers = StoreSpec.from_dict({**spec.to_dict(), "layers": [-4, -1]})
    assert with_layers.layers == (-4, -1)
    assert StoreSpec.from_dict(json.loads(json.dumps(with_layers.to_dict()))) == with_layers


def test_extract_with_layers_then_finetune_and_a_mismatch_is_exit_2(tmp_path, capsys):
    tree = ucf_tree(tmp_path / "tree", train_per_class=2, test_per_class=1, num_frames=8)
    config = tiny_config(
        tmp_path / "layers.yaml",
        ifm={"name": NAME, "img_size": SIZE, "layers": [-4, -1], "layer_merge": "concat"},
        data={"root": str(tree)},
        train={"epochs": 1},
    )
    store = tmp_path / "store"
    assert main(["extract", "--config", str(config), "--out", str(store)]) == 0
    manifest = json.loads((store / "manifest.json").read_text())
    assert manifest["spec"]["layers"] == [-4, -1] and manifest["spec"]["layer_merge"] == "concat"
    assert FeatureStore(store).spec.token_shape == (2 * WIDTH, 2, 2)

    source = f"data.source=store:{store}"
    argv = ["finetune", "--config", str(config), "--set", source, "--out", str(tmp_path / "ft")]
    assert main(argv) == 0, capsys.readouterr().err
    assert (tmp_path / "ft" / "checkpoints" / "last.safetensors").is_file()
    capsys.readouterr()

    mismatches = [
        ("ifm.layers=[-1]", "ifm.layers: store [-4, -1], the config [-1]"),
        ("ifm.layer_merge=mean", "ifm.layer_merge: store 'concat', the config 'mean'"),
    ]
    for override, named in mismatches:
        argv = ["finetune", "--config", str(config), "--set", source, "--set", override,
                "--out", str(tmp_path / "other")]  # fmt: skip
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "does not match the config" in err and named in err, err


def test_a_store_written_before_layers_resumes_and_serves_the_default(tmp_path):
    from advise.data.store import SPEC_DEFAULTS, manifest_checksum
    from advise.runs import expected_store_spec, extract

    tree = ucf_tree(tmp_path / "tree", train_per_class=1, test_per_class=1, num_frames=4)
    config = load_config(str(tiny_config(tmp_path / "mini.yaml", data={"root": str(tree)})))
    store = extract(config, tmp_path / "store", progress=False)

    def as_written_before_layers(name: str) -> None:
        record = json.loads((store / name).read_text())
        for key in SPEC_DEFAULTS:
            del record["spec"][key]
        if "sha256" in record:
            record["sha256"] = manifest_checksum(record)
        (store / name).write_text(json.dumps(record))

    as_written_before_layers("store.json")
    extract(config, store, progress=False)  # resumes: nothing to do, no "other settings"
    as_written_before_layers("manifest.json")
    opened = FeatureStore(store)
    assert (opened.spec.layers, opened.spec.layer_merge) == (None, "concat")
    opened.check_matches(expected_store_spec(config, opened.spec, 1))


def test_a_checkpoint_of_other_layers_is_refused_naming_the_key():
    """A `mean` checkpoint has the default width, so shapes alone would not catch it."""
    from advise.config import load_config
    from advise.train.checkpoint import CheckpointError, check_architecture

    trained = load_config("demo", ["ifm.layers=[-4, -1]", "ifm.layer_merge=mean"]).to_dict()
    check_architecture(trained, trained, "x.safetensors")
    for overrides in ([], ["ifm.layers=[-3, -1]", "ifm.layer_merge=mean"]):
        with pytest.raises(CheckpointError, match="ifm.layers: checkpoint"):
            check_architecture(trained, load_config("demo", overrides), "x.safetensors")
    old = load_config("demo").to_dict()
    del old["ifm"]["layers"], old["ifm"]["layer_merge"]  # written before ifm.layers existed
    check_architecture(old, load_config("demo"), "x.safetensors")
