"""Every config key is range-checked when the config is built: a bad value, typed on the
command line, is exit 2 with one line naming the key, the value and what is allowed; never
exit 1, never a traceback. Random values go through `advise summary --set` (mini IFM on the
meta device: milliseconds per run); the many-example run is marked slow."""

from __future__ import annotations

import dataclasses
import io
import json
import typing
from contextlib import redirect_stderr, redirect_stdout

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from advise.cli import main
from advise.config import (
    CHOICES,
    FREE_FORM,
    RANGES,
    Config,
    ConfigError,
    load_config,
    lookup,
    parse_override,
    valid_keys,
)

KEYS = valid_keys()
# the demo's mini IFM at 64 px: an 8 x 8 token grid of 96 channels
DEMO_GRID, DEMO_WIDTH = 8, 96


def run_summary(*overrides: str) -> tuple[int, str, str]:
    """`advise summary --config demo --set ... --json` in-process: (exit code, stdout, stderr)."""
    argv = ["summary", "--config", "demo", "--json"]
    for override in overrides:
        argv += ["--set", override]
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exit_:  # argparse's usage errors
            code = exit_.code
    return code, out.getvalue(), err.getvalue()


def bool_keys(cls: type = Config, prefix: str = "") -> set[str]:
    keys = set()
    for name, kind in typing.get_type_hints(cls).items():
        if dataclasses.is_dataclass(kind):
            keys |= bool_keys(kind, f"{prefix}{name}.")
        elif kind is bool:
            keys.add(prefix + name)
    return keys


def test_every_key_has_exactly_one_rule():
    """A new key must get a range (RANGES), a list of choices (CHOICES), or be declared
    free-form (file names); bools are checked by type."""
    rules = [set(RANGES), set(CHOICES), set(FREE_FORM), bool_keys()]
    for rule in rules:
        assert rule <= set(KEYS), rule - set(KEYS)
    for key in KEYS:
        assert sum(key in rule for rule in rules) == 1, key


@pytest.mark.parametrize(
    "key, value, allowed",
    [
        ("optim.base_lr", "-0.1", "(0, 100]"),
        ("optim.base_lr", "0", "(0, 100]"),
        ("optim.base_lr", "nan", "finite"),
        ("optim.base_lr", ".nan", "finite"),
        ("optim.base_lr", ".inf", "finite"),
        ("optim.base_lr", "-.inf", "finite"),
        ("optim.base_lr", "1e999", "finite"),
        ("optim.base_lr", "9" * 400, "finite"),  # overflows a float
        ("optim.weight_decay", "-1", "[0, 1]"),
        ("head.dropout", "1.5", "[0, 1)"),
        ("head.hidden", "0", "[1, 8192]"),
        ("ifm.img_size", "0", "[16, 1024]"),
        ("train.threads", "-1", "[0, 1024]"),
        ("optim.reference_batch", "0", "[1, "),
        ("sfu.spatial", "0", "[1, 128]"),
        ("tmm.bottleneck.hidden", str(10**9), "exhaust memory"),
        ("tmm.bottleneck.hidden", "9" * 5000, "integer"),  # too long for YAML to read as an integer
        ("data.max_bad_fraction", "-1", "[0, 1]"),
        ("data.max_bad_fraction", ".nan", "finite"),
        ("pretext.prp.speeds", "[1, 1]", "distinct"),
        ("pretext.prp.speeds", "[1, 1000]", "[1, 64]"),
        ("train.checkpoint_every", "-5", "[0, "),
        ("train.seed", "-1", "[0, 4294967295]"),
        ("train.log_every", "0", "[1, "),
        ("train.batch_size", str(10**6), "[1, 4096]"),
        ("data.num_frames", str(10**6), "[1, 256]"),
        ("tmm.bottleneck.blocks", "100000", "[1, 64]"),
        ("optim.grad_clip", "0", "(0, "),
        ("data.split", "4", "1, 2, 3"),
    ],
)
def test_listed_bad_values_are_exit_2_naming_key_value_and_range(key, value, allowed):
    code, _, err = run_summary(f"{key}={value}")
    assert code == 2, err
    assert err.startswith(f"advise: error: {key} ") and err.count("\n") == 1, err
    assert allowed in err and "Traceback" not in err


def test_a_yaml_config_is_checked_the_same_way(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("base: demo\noptim:\n  base_lr: .nan\n")
    with pytest.raises(ConfigError, match=r"optim\.base_lr must be a finite number"):
        load_config(str(path))


@pytest.mark.parametrize(
    "override",
    [
        "head.dropout=0.99", "train.checkpoint_every=0", "data.max_bad_fraction=0",
        "data.max_bad_fraction=1", "ifm.img_size=16", "ifm.img_size=1024", "ifm.img_size=null",
        "tmm.bottleneck.hidden=8192", "optim.base_lr=100", "pretext.prp.speeds=[3, 1]",
        "train.threads=0", "train.seed=4294967295", "sfu.spatial=null", "optim.grad_clip=null",
        "train.epochs=0", "optim.weight_decay=0", "data.split=3",
        "tmm.bottleneck.temporal_kernel=15",
    ],
)  # fmt: skip
def test_values_at_the_ends_of_a_range_are_accepted(override):
    key, value = parse_override(override)
    config = load_config("demo", [override])
    stored = lookup(config, key)
    assert stored == (tuple(value) if isinstance(value, list) else value)


def test_sizes_at_the_demo_ifm_bounds_build():
    code, out, err = run_summary(f"sfu.spatial={DEMO_GRID}", f"sfu.channels={DEMO_WIDTH}")
    assert code == 0, err
    assert json.loads(out)["tmm_input"][0] == DEMO_WIDTH


@pytest.mark.parametrize("override", [f"sfu.spatial={DEMO_GRID + 1}", "sfu.channels=97"])
def test_sfu_sizes_beyond_the_ifm_are_exit_2(override):
    code, _, err = run_summary(override)
    assert code == 2 and override.split("=")[0] in err, err


# ---- random values for every key ----------------------------------------------------------

NUMBERS = st.one_of(
    st.integers(-3, 300),
    st.integers(-(10**30), 10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, 15, 16, 64, 129, 1024, 8192, 8193, 2**32, 10**9, 0.5, 1.0, -0.0]),
)
VALUES = st.one_of(
    NUMBERS,
    st.booleans(),
    st.none(),
    st.text(max_size=12),
    st.lists(st.one_of(NUMBERS, st.text(max_size=3)), max_size=4),
)
# YAML spellings that JSON has no word for, and raw text (YAML parses it, or it stays a string)
NASTY_TEXTS = [
    "nan", ".nan", "inf", ".inf", "-.inf", "1e999", "-1e999", "1e-3", "~", "", "[]", "[1, 1]",
    "{a: 1}", "0x10", "1_000", "12:30", "2001-01-01", "9" * 5000, "mini", "mini+mini", "+",
    "store:", "store:x", "ssv2", "bf16", "true", "[[1]]", "*x", "!!python/none ''", "-1", "0",
    "0.5", str(10**9), str(10**30),
]  # fmt: skip
TEXTS = st.one_of(VALUES.map(json.dumps), st.sampled_from(NASTY_TEXTS), st.text(max_size=20))
CASES = st.tuples(st.sampled_from(KEYS), TEXTS)


def check_any_value(key: str, text: str) -> None:
    code, out, err = run_summary(f"{key}={text}")
    assert "Traceback" not in err, err
    assert code in (0, 2), f"{key}={text[:80]!r}: exit {code}: {err}"
    if code == 0:
        assert isinstance(json.loads(out), dict)
        return
    message = err.strip()
    assert "\n" not in message, message
    assert key in message, f"{key}={text[:80]!r}: {message}"


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(case=CASES)
def test_any_value_of_any_key_is_accepted_or_refused_by_name(case):
    check_any_value(*case)


@pytest.mark.slow
@settings(max_examples=3000, deadline=None, derandomize=True, database=None)
@given(case=CASES)
def test_any_value_of_any_key_is_accepted_or_refused_by_name_many(case):
    check_any_value(*case)


@pytest.mark.slow
@pytest.mark.parametrize("key", KEYS)
def test_every_key_takes_every_nasty_text(key):
    for text in NASTY_TEXTS:
        check_any_value(key, text)
