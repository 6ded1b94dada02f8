import pytest

from advise.config import Config, ConfigError, load_config, preset_names, save_config


def test_defaults_follow_the_paper():
    config = Config()
    assert config.pretext.prp.speeds == (1, 2, 4, 8)
    assert config.pretext.prp.clips_per_video == 4
    assert config.tmm.bottleneck.blocks == 1 and config.tmm.bottleneck.hidden == 256
    assert config.head.hidden == 1024


def test_override_types_and_nesting():
    config = load_config(
        "default", ["tmm.hidden=512", "optim.base_lr=1e-3", "pretext.speeds=[1,2]"]
    )
    assert config.tmm.bottleneck.hidden == 512
    assert config.optim.base_lr == pytest.approx(1e-3)
    assert config.pretext.prp.speeds == (1, 2)
    assert load_config(None, ["ifm.img_size=null"]).ifm.img_size is None
    assert load_config(None, ["optim.grad_clip=2"]).optim.grad_clip == 2.0


@pytest.mark.parametrize(
    "override, message",
    [
        ("tmm.hiden=3", "did you mean 'tmm.bottleneck.hidden'"),
        ("tmm.hidden=abc", "tmm.bottleneck.hidden must be an integer"),
        ("tmm.kind=lstm", "tmm.kind must be one of"),
        ("tmm.temporal_kernel=2", "must be odd"),
        ("data.flip=maybe", "data.flip must be true or false"),
        ("eval.num_crops=2", "eval.num_crops"),
        ("nokey", "key=value"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("default", [override])


def test_unknown_preset_suggests(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'paper-tmm'"):
        load_config("paper-tm")
    bad = tmp_path / "bad.yaml"
    bad.write_text("tmm:\n  hiddn: 3\n")
    with pytest.raises(ConfigError, match="tmm.hiddn"):
        load_config(str(bad))


def test_yaml_base_chain_and_round_trip(tmp_path):
    child = tmp_path / "child.yaml"
    child.write_text("base: paper-tmm\ntmm:\n  blocks: 2\n")
    config = load_config(str(child))
    assert config.tmm.bottleneck.blocks == 2 and config.tmm.bottleneck.temporal_kernel == 1
    saved = tmp_path / "saved.yaml"
    save_config(config, saved)
    assert load_config(str(saved)) == config


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_validates(name):
    assert isinstance(load_config(name), Config)
