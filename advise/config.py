"""One typed configuration: frozen dataclasses per section, YAML presets, dotted overrides.

A preset is a small YAML file that overrides the defaults below (it may name another preset in
`base:`, or a list of them merged left to right, and override that). `--set tmm.hidden=512`
overrides a preset. Unknown keys, values of the wrong type and values outside their range (RANGES,
CHOICES) raise `ConfigError` naming the key (and the nearest valid key) and what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from advise.files import atomic_write

PRESET_DIR = Path(__file__).parent / "presets"


class ConfigError(ValueError):
    """A configuration value or key that cannot be used; the message names it."""


@dataclass(frozen=True)
class IFMConfig:
    """The frozen image foundation model."""

    name: str = "clip-b16"  # a name from `advise.models.ifm.IFM_REGISTRY`
    img_size: int | None = None  # input size in pixels; None = the IFM's own default
    weights: str | None = None  # a local weights file; None = the registry's source
    random_init: bool = False  # only on explicit request; reports say so
    precision: str = "auto"  # auto (bf16 where the device runs it natively) | fp32 | bf16
    # transformer blocks whose patch tokens are used, e.g. [-4, -1] (negative: from the end);
    # None = the last block's, as forward_features gives them. See README "Multi-layer tokens"
    layers: tuple[int, ...] | None = None
    layer_merge: str = "concat"  # concat (width D x len(layers)) | mean (width D)


@dataclass(frozen=True)
class SFUConfig:
    """Spatial feature utilisation: optional average pooling of the token grid (and a learned
    linear adapter of its width)."""

    spatial: int | None = None  # pool the h x w grid to spatial x spatial; None = keep
    channels: int | None = None  # pool D channels to this many; None = keep
    # a learned linear map of the (pooled) tokens to this many channels, before the TMM; None
    # = none. For a TMM pre-trained on an IFM of another width (`finetune --transplant`)
    adapter: int | None = None


@dataclass(frozen=True)
class BottleneckConfig:
    """tmm.kind=bottleneck: ResNet-3D bottleneck blocks (`advise.models.tmm.BottleneckTMM`)."""

    blocks: int = 1  # bottleneck blocks in the stack
    hidden: int = 256  # the blocks' inner (bottleneck) width
    out: int = 1024  # output channels (the head's input width)
    temporal_kernel: int = 3  # 1 reproduces the paper's measured cost tables; see README

    def check(self) -> None:
        _odd("tmm.bottleneck.temporal_kernel", (self.temporal_kernel,))


@dataclass(frozen=True)
class Conv3dConfig:
    """tmm.kind=conv3d: two plain 3-D convolutions (`advise.models.tmm_conv3d.Conv3dTMM`)."""

    hidden: int = 256  # channels between the two convolutions
    out: int = 1024  # output channels (the head's input width)
    kernel: tuple[int, ...] = (3, 3, 3)  # (t, h, w), each odd: keeps T, h, w unchanged

    def check(self) -> None:
        _three("tmm.conv3d.kernel", self.kernel)
        _odd("tmm.conv3d.kernel", self.kernel)


@dataclass(frozen=True)
class TransformerConfig:
    """tmm.kind=transformer: space-time self-attention over every token
    (`advise.models.tmm_transformer.TransformerTMM`)."""

    depth: int = 2  # encoder blocks
    width: int = 256  # attention width; the tokens are projected to it
    heads: int = 4  # attention heads; must divide width
    mlp_ratio: float = 4.0  # each block's MLP width / width
    out: int = 1024  # output channels (the head's input width)
    dropout: float = 0.0  # in attention and MLP

    def check(self) -> None:
        _divisible("transformer", self.width, self.heads)


@dataclass(frozen=True)
class SwinConfig:
    """tmm.kind=swin: a video-Swin stage, attention in (shifted) 3-D windows
    (`advise.models.tmm_swin.SwinTMM`)."""

    depth: int = 2  # blocks; every second one shifts its windows by half a window
    width: int = 256  # attention width; the tokens are projected to it
    heads: int = 4  # attention heads; must divide width
    window: tuple[int, ...] = (2, 4, 4)  # (t, h, w) tokens per window, cut to the input's size
    mlp_ratio: float = 4.0  # each block's MLP width / width
    out: int = 1024  # output channels (the head's input width)
    dropout: float = 0.0  # in attention and MLP

    def check(self) -> None:
        _three("tmm.swin.window", self.window)
        _divisible("swin", self.width, self.heads)


@dataclass(frozen=True)
class TMMConfig:
    """The temporal modelling module: `kind` picks one of `advise.models.registry.TMM_KINDS`, and
    only that kind's section (`tmm.<kind>.*`) may differ from its defaults."""

    kind: str = "bottleneck"  # bottleneck | conv3d | transformer | swin | none (avg-pool)
    frozen: bool = False  # keep the inherited SFU + TMM fixed (linear probing)
    bottleneck: BottleneckConfig = field(default_factory=BottleneckConfig)
    conv3d: Conv3dConfig = field(default_factory=Conv3dConfig)
    transformer: TransformerConfig = field(default_factory=TransformerConfig)
    swin: SwinConfig = field(default_factory=SwinConfig)


# the kinds with a config section: one TMMConfig field each (advise.models.registry has them all)
TMM_SECTIONS = tuple(
    f.name for f in dataclasses.fields(TMMConfig) if f.name not in ("kind", "frozen")
)


@dataclass(frozen=True)
class HeadConfig:
    """The classifier on the pooled TMM output."""

    kind: str = "mlp"  # mlp (2 FC, BN + ReLU between) | linear
    hidden: int = 1024  # the MLP head's hidden width
    dropout: float = 0.0  # before the last layer


@dataclass(frozen=True)
class DataConfig:
    """Where videos come from and how clips are cut from them."""

    format: str = "ucf101"  # ucf101 | hmdb51 | diving48 | ssv2 | k400 | csv | folders (README)
    root: str = ""  # folder the annotation paths are relative to
    annotations: str = ""  # per format (README): split folder, or the train JSON/CSV file
    test_annotations: str = ""  # diving48/ssv2/k400/csv: the test (validation) file
    split: int = 1  # ucf101 / hmdb51 split 1-3
    split_seed: int = 0  # folders: draws each class's test videos (data.root/<class>/ trees)
    test_fraction: float = 0.2  # folders: share of each class's videos drawn for test
    quarantine: str = ""  # a list of videos to skip (written by `advise check-data`)
    source: str = "video"  # video (decode + IFM online) | store:PATH (tokens of `advise extract`)
    num_frames: int = 8  # frames per clip
    stride: int = 2  # frames between clip frames at playback rate 1 (PRP)
    flip: bool = True  # random horizontal flip (never for direction-dependent labels)
    scale_min: float = 0.76  # random resized crop area range [scale_min, 1]
    color_jitter_p: float = 0.8  # probability of colour jitter per clip
    grayscale_p: float = 0.2  # probability of grey-scaling a clip
    num_workers: int = 2  # DataLoader worker processes (0 = decode in the main one)
    in_memory: bool = False  # store:PATH: read each video's tokens once, pooled, into memory
    max_bad_fraction: float = 0.05  # fail the run when more videos than this fail to decode

    @property
    def store_path(self) -> Path | None:
        """The feature store `source` names (`store:PATH`), or None for decoded videos."""
        prefix = "store:"
        return (
            Path(self.source[len(prefix) :]).expanduser()
            if self.source.startswith(prefix)
            else None
        )


@dataclass(frozen=True)
class PRPConfig:
    """pretext.kind=prp: playback-rate perception (`advise.pretexts.prp`)."""

    speeds: tuple[int, ...] = (1, 2, 4, 8)  # label = index in this tuple
    jitter: float = 0.2  # rate x (1 + U(-jitter, jitter))
    clips_per_video: int = 4  # clips (one speed each) per video and epoch
    reverse: bool = False  # add reversed playback rates as extra classes
    label_smoothing: float = 0.05  # of the speed classification loss

    def check(self) -> None:
        if len(set(self.speeds)) < len(self.speeds):
            raise ConfigError(
                f"pretext.prp.speeds must be distinct (each speed is one class: a repeated one "
                f"gives two classes of the same clips), got {list(self.speeds)}"
            )


@dataclass(frozen=True)
class BYOLConfig:
    """pretext.kind=byol: two clips of one video, an online network with a predictor learns to
    give a momentum target network's embedding of the other clip (`advise.pretexts.byol`)."""

    dim: int = 256  # embedding (projection) width
    hidden: int = 1024  # projector and predictor hidden width
    momentum: float = 0.99  # the target's EMA momentum at the start, cosine-raised to 1


@dataclass(frozen=True)
class PretextConfig:
    """The self-supervised pretext task: `kind` picks one of `advise.pretexts.PRETEXTS`, and
    only that kind's section (`pretext.<kind>.*`) may differ from its defaults."""

    kind: str = "prp"  # prp | byol; see advise.pretexts
    prp: PRPConfig = field(default_factory=PRPConfig)
    byol: BYOLConfig = field(default_factory=BYOLConfig)


# one section per pretext kind (advise.pretexts has them all)
PRETEXT_SECTIONS = tuple(f.name for f in dataclasses.fields(PretextConfig) if f.name != "kind")
SECTIONS = {"tmm": TMM_SECTIONS, "pretext": PRETEXT_SECTIONS}  # parts picked by a `kind` key
LEGACY_KEYS = {  # keys of earlier versions -> their place now (old checkpoints and presets)
    **{f"tmm.{name}": f"tmm.bottleneck.{name}" for name in BottleneckConfig.__annotations__},
    **{f"pretext.{name}": f"pretext.prp.{name}" for name in PRPConfig.__annotations__},
}


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warm-up and cosine decay, per step."""

    base_lr: float = 1e-3  # peak lr = base_lr x batch_size / reference_batch
    reference_batch: int = 256  # the batch size base_lr is stated for
    weight_decay: float = 1e-6  # AdamW's decoupled weight decay
    warmup_epochs: float = 5.0  # linear warm-up from 0 to the peak lr
    min_lr: float = 0.0  # where the cosine decay ends
    label_smoothing: float = 0.0  # fine-tuning loss (PRP uses pretext.prp.label_smoothing)
    grad_clip: float | None = None  # max gradient norm; None = no clipping


@dataclass(frozen=True)
class TrainConfig:
    """The training loop: length, batch, seed, device, logging and checkpoints."""

    epochs: int = 800  # passes over the training videos
    batch_size: int = 8  # videos per step
    seed: int = 0  # initialisation, clip sampling, augmentation, order
    device: str = "auto"  # auto | cpu | cuda
    log_every: int = 10  # steps between metrics.jsonl lines
    checkpoint_every: int = 0  # steps between checkpoints; 0 = at the end of every epoch
    # at an epoch's end, save only once this many seconds have passed since the last save
    # (0 = every epoch); the end of training is always saved
    checkpoint_seconds: float = 0.0
    threads: int = 0  # torch intra-op threads; 0 = torch's default
    precision: str = "fp32"  # the TMM and head: fp32, or bf16 autocast (ifm.precision is apart)
    sync_bn: bool = False  # DDP: batch-norm statistics over the global batch, not per process
    eval_every: int = 0  # fine-tuning: validate (1x1 views, test split) every N epochs; 0 = never
    tensorboard: bool = False  # also write the metrics as TensorBoard events (RUN/tensorboard)


@dataclass(frozen=True)
class EvalConfig:
    """Multi-view testing: each video's softmax averaged over clips x crops."""

    num_clips: int = 2  # temporal clips per video
    num_crops: int = 3  # spatial crops per clip
    batch_size: int = 4  # videos per evaluation step


@dataclass(frozen=True)
class Config:
    ifm: IFMConfig = field(default_factory=IFMConfig)
    sfu: SFUConfig = field(default_factory=SFUConfig)
    tmm: TMMConfig = field(default_factory=TMMConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    data: DataConfig = field(default_factory=DataConfig)
    pretext: PretextConfig = field(default_factory=PretextConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))

    def replace(self, overrides: dict[str, Any]) -> Config:
        """A copy with dotted-key overrides applied (values already typed or YAML text)."""
        return from_dict(merge(self.to_dict(), unflatten(overrides)))


CHOICES: dict[str, tuple[Any, ...]] = {
    "ifm.precision": ("auto", "fp32", "bf16"),
    "ifm.layer_merge": ("concat", "mean"),
    "tmm.kind": (*TMM_SECTIONS, "none"),
    "pretext.kind": PRETEXT_SECTIONS,
    "head.kind": ("mlp", "linear"),
    "data.format": ("ucf101", "hmdb51", "diving48", "ssv2", "k400", "csv", "folders"),
    "data.split": (1, 2, 3),  # ucf101 / hmdb51 publish three splits
    "train.device": ("auto", "cpu", "cuda"),
    "train.precision": ("fp32", "bf16"),
    "eval.num_crops": (1, 3),  # centre, or left-centre-right (top-centre-bottom)
}


@dataclass(frozen=True)
class Range:
    """Allowed numbers from `low` to `high`; `*_open` leaves that end out (nan is never in).

    `why` says where an upper bound comes from (most keep a huge value from exhausting memory).
    """

    low: float
    high: float
    low_open: bool = False
    high_open: bool = False
    why: str = ""

    def __contains__(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def __str__(self) -> str:
        opening, closing = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"{opening}{self.low}, {self.high}{closing}"


FRACTION = Range(0, 1)
PROBABILITY_BELOW_ONE = Range(0, 1, high_open=True)  # dropout, smoothing, jitter
WIDTH = Range(1, 8192, why="channels; wider would exhaust memory; the paper's widest is 2048")
BATCH = Range(1, 4096, why="videos per step; more would exhaust memory")

# Every number of the config: key -> allowed range (checked per item for lists). With CHOICES,
# the bool fields and FREE_FORM below this covers every key (tests/test_config_ranges.py).
RANGES: dict[str, Range] = {
    "ifm.img_size": Range(16, 1024, why="pixels: at least one 16-px patch; more exhausts memory"),
    "ifm.layers": Range(-128, 127, why="blocks, negative from the end; also within the IFM depth"),
    "sfu.spatial": Range(1, 128, why="grid side; also at most the IFM's token grid"),
    "sfu.channels": Range(1, 8192, why="channels; also at most the IFM's width"),
    "sfu.adapter": WIDTH,
    "tmm.bottleneck.blocks": Range(1, 64, why="bottleneck blocks; more would exhaust memory"),
    "tmm.bottleneck.hidden": WIDTH,
    "tmm.bottleneck.out": WIDTH,
    "tmm.bottleneck.temporal_kernel": Range(1, 15, why="frames; odd"),
    "tmm.conv3d.hidden": WIDTH,
    "tmm.conv3d.out": WIDTH,
    "tmm.conv3d.kernel": Range(1, 15, why="tokens; odd"),
    "tmm.transformer.depth": Range(1, 64, why="blocks; more would exhaust memory"),
    "tmm.transformer.width": WIDTH,
    "tmm.transformer.heads": Range(1, 64),
    "tmm.transformer.mlp_ratio": Range(0, 16, low_open=True),
    "tmm.transformer.out": WIDTH,
    "tmm.transformer.dropout": PROBABILITY_BELOW_ONE,
    "tmm.swin.depth": Range(1, 64, why="blocks; more would exhaust memory"),
    "tmm.swin.width": WIDTH,
    "tmm.swin.heads": Range(1, 64),
    "tmm.swin.window": Range(1, 64, why="tokens"),
    "tmm.swin.mlp_ratio": Range(0, 16, low_open=True),
    "tmm.swin.out": WIDTH,
    "tmm.swin.dropout": PROBABILITY_BELOW_ONE,
    "head.hidden": WIDTH,
    "head.dropout": PROBABILITY_BELOW_ONE,
    "data.num_frames": Range(1, 256, why="frames per clip; more would exhaust memory"),
    "data.stride": Range(1, 256, why="frames"),
    "data.scale_min": Range(0, 1, low_open=True),
    "data.color_jitter_p": FRACTION,
    "data.grayscale_p": FRACTION,
    "data.num_workers": Range(0, 256, why="processes"),
    "data.max_bad_fraction": FRACTION,
    "pretext.prp.speeds": Range(1, 64, why="playback rates"),
    "pretext.prp.jitter": PROBABILITY_BELOW_ONE,
    "pretext.prp.clips_per_video": Range(1, 64, why="clips; more would exhaust memory"),
    "pretext.prp.label_smoothing": PROBABILITY_BELOW_ONE,
    "pretext.byol.dim": WIDTH,
    "pretext.byol.hidden": WIDTH,
    "pretext.byol.momentum": PROBABILITY_BELOW_ONE,
    "optim.base_lr": Range(0, 100, low_open=True),
    "optim.reference_batch": Range(1, 1 << 20),
    "optim.weight_decay": FRACTION,
    "optim.warmup_epochs": Range(0, 100_000),
    "optim.min_lr": Range(0, 100),
    "optim.label_smoothing": PROBABILITY_BELOW_ONE,
    "optim.grad_clip": Range(0, 1_000_000, low_open=True),
    "data.split_seed": Range(0, 2**32 - 1, why="any whole number; the split is a function of it"),
    "data.test_fraction": Range(0, 1, high_open=True, why="0 = every video trains"),
    "train.epochs": Range(0, 100_000),
    "train.batch_size": BATCH,
    "train.seed": Range(0, 2**32 - 1, why="NumPy's seed range"),
    "train.log_every": Range(1, 10**9, why="steps"),
    "train.checkpoint_every": Range(0, 10**9, why="steps; 0 = at the end of every epoch"),
    "train.checkpoint_seconds": Range(0, 10**9, why="seconds; 0 = at the end of every epoch"),
    "train.eval_every": Range(0, 10**9, why="epochs; 0 = no validation"),
    "train.threads": Range(0, 1024, why="0 = torch's default"),
    "eval.num_clips": Range(1, 64, why="clips per video; more would exhaust memory"),
    "eval.batch_size": BATCH,
}  # fmt: skip

# Strings that name files or folders, or are checked where they are used: ifm.name against the
# IFM registry when the model is built (exit 2 listing the known names); data.source below.
FREE_FORM = (
    "ifm.name", "ifm.weights", "data.root", "data.annotations", "data.test_annotations",
    "data.quarantine", "data.source",
)  # fmt: skip


def _show(value: Any, limit: int = 60) -> str:
    """`value` for a one-line message, cut short when huge."""
    text = repr(list(value) if isinstance(value, tuple) else value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def _plain(value: Any) -> Any:
    """Tuples -> lists, recursively, so the dict round-trips through YAML and JSON."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def valid_keys(cls: type = Config, prefix: str = "") -> list[str]:
    keys = []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(f.type) or isinstance(f.default_factory, type):
            keys += valid_keys(_field_type(cls, f.name), f"{prefix}{f.name}.")
        else:
            keys.append(prefix + f.name)
    return keys


def _field_type(cls: type, name: str) -> Any:
    return typing.get_type_hints(cls)[name]


def _hint(key: str) -> str:
    """For an unknown key: a kind section's own keys, or the nearest valid key."""
    part, *rest = key.split(".")
    if rest and rest[0] in SECTIONS.get(part, ()):
        own = ", ".join(f.name for f in _section_fields(part, rest[0]))
        kinds = ", ".join(CHOICES[f"{part}.kind"])
        return f" ({part}.{rest[0]} has: {own}; {part}.kind: {kinds})"
    return _suggest(key)


def _suggest(key: str) -> str:
    close = difflib.get_close_matches(key, [*valid_keys(), *LEGACY_KEYS], n=1, cutoff=0.5)
    return f" (did you mean {LEGACY_KEYS.get(close[0], close[0])!r}?)" if close else ""


def _coerce(key: str, value: Any, kind: Any) -> Any:
    """Check `value` against the annotation `kind`; convert what is safe (int -> float)."""
    origin = typing.get_origin(kind)
    if origin in (types.UnionType, typing.Union):
        options = typing.get_args(kind)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(key, value, option)
            except ConfigError as error:
                errors.append(error)
        raise errors[0]
    if origin is tuple:
        if not isinstance(value, list | tuple) or not value:
            raise ConfigError(f"{key} must be a non-empty list, got {_show(value)}")
        item_kind = typing.get_args(kind)[0]
        return tuple(_coerce(key, item, item_kind) for item in value)
    if kind is float and isinstance(value, int | str) and not isinstance(value, bool):
        try:  # YAML 1.1 reads "1e-3" (no dot) as a string; 10**400 overflows a float
            value = float(value)
        except (ValueError, OverflowError):
            raise ConfigError(f"{key} must be a finite number, got {_show(value)}") from None
    if kind is bool and not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false, got {_show(value)}")
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{key} must be an integer, got {_show(value)}")
    if kind in (float, str) and not isinstance(value, kind):
        raise ConfigError(f"{key} must be a {kind.__name__}, got {_show(value)}")
    if key in CHOICES and value not in CHOICES[key]:
        choices = ", ".join(str(choice) for choice in CHOICES[key])
        raise ConfigError(f"{key} must be one of {choices}; got {_show(value)}")
    return value


def from_dict(values: dict[str, Any], cls: type = Config, prefix: str = "") -> Any:
    """Build the dataclass `cls` from nested dicts, validating every key and value."""
    if not isinstance(values, dict):
        name = prefix.rstrip(".") or "config"
        raise ConfigError(f"{name} must be a mapping of keys, got {_show(values)}")
    if cls is Config:
        values = migrate(values)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for name, value in values.items():
        key = prefix + name
        if name not in names:
            raise ConfigError(f"unknown config key {key!r}{_hint(key)}")
        kind = hints[name]
        if dataclasses.is_dataclass(kind):
            kwargs[name] = from_dict(value, kind, key + ".")
        else:
            kwargs[name] = _coerce(key, value, kind)
    config = cls(**kwargs)
    if cls is Config:
        check(config)
    return config


def check(config: Config) -> None:
    """Every number against its range in RANGES, then the cross-field checks."""
    for key, allowed in RANGES.items():
        value = lookup(config, key)
        items = value if isinstance(value, tuple) else (value,)
        if all(item is None or item in allowed for item in items):
            continue
        finite = "a finite number " if isinstance(value, float) else ""
        each = " each" if isinstance(value, tuple) else ""
        why = f" ({allowed.why})" if allowed.why else ""
        raise ConfigError(f"{key} must{each} be {finite}in {allowed}{why}, got {_show(value)}")
    for part, kinds in SECTIONS.items():  # each section's own cross-field checks
        for kind in kinds:
            section = lookup(config, f"{part}.{kind}")
            if hasattr(section, "check"):
                section.check()
    _check_ifm_layers(config.ifm)
    source = config.data.source
    if source != "video" and not (source.startswith("store:") and len(source) > len("store:")):
        raise ConfigError(f"data.source must be 'video' or 'store:PATH', got {_show(source)}")
    if config.data.format == "ssv2" and config.data.flip:
        raise ConfigError(
            'data.flip=true with data.format=ssv2: a horizontal flip turns "left" into "right" '
            'in Something-Something labels (e.g. "Pushing something from left to right"), so '
            "flipped clips carry the wrong label; set data.flip=false"
        )


def _check_ifm_layers(ifm: IFMConfig) -> None:
    """ifm.layers distinct as written (the IFM checks them against its depth when built), and
    ifm.layer_merge only set where there are layers to merge (else it would be ignored)."""
    if ifm.layers is not None and len(set(ifm.layers)) < len(ifm.layers):
        raise ConfigError(f"ifm.layers must be distinct blocks, got {list(ifm.layers)}")
    if ifm.layers is None and ifm.layer_merge != "concat":
        raise ConfigError(
            f"ifm.layer_merge={ifm.layer_merge} has no effect without ifm.layers (the last "
            f"block's tokens alone); set ifm.layers, e.g. [-4, -1], or drop ifm.layer_merge"
        )


def lookup(config: Any, key: str) -> Any:
    """The value of a dotted key: lookup(config, "tmm.bottleneck.hidden")."""
    for name in key.split("."):
        config = getattr(config, name)
    return config


def _odd(key: str, sizes: tuple[int, ...]) -> None:
    if any(size % 2 == 0 for size in sizes):
        raise ConfigError(f"{key} must be odd (keeps T, h, w unchanged), got {_show(sizes)}")


def _three(key: str, sizes: tuple[int, ...]) -> None:
    if len(sizes) != 3:
        raise ConfigError(f"{key} must be three sizes (t, h, w), got {_show(sizes)}")


def _divisible(kind: str, width: int, heads: int) -> None:
    if width % heads:
        raise ConfigError(
            f"tmm.{kind}.width={width} must be divisible by tmm.{kind}.heads={heads} (each head "
            f"gets width / heads channels)"
        )


def check_own_section(config: Config, keys: list[str]) -> None:
    """Refuse `keys` (set by the user: overrides, or the preset file itself rather than its
    bases) that give a section other than the chosen kind's (`tmm.<kind>`, `pretext.<kind>`)
    a value other than its default; it would be ignored silently."""
    defaults = Config()
    for key in keys:
        part, *rest = key.split(".")
        kind = lookup(config, f"{part}.kind") if part in SECTIONS else None
        if (
            len(rest) > 1
            and rest[0] in SECTIONS.get(part, ())
            and rest[0] != kind
            and lookup(config, key) != lookup(defaults, key)
        ):
            own = ", ".join(f"{part}.{kind}.{f.name}" for f in _section_fields(part, kind))
            reads = f"its own section ({own})" if own else "no section"
            raise ConfigError(
                f"{key} is set but {part}.kind={kind}, which reads {reads}; set "
                f"{part}.kind={rest[0]} to use it (kinds: {', '.join(CHOICES[f'{part}.kind'])})"
            )


def _section_fields(part: str, kind: str) -> tuple[dataclasses.Field, ...]:
    if kind not in SECTIONS[part]:
        return ()
    return dataclasses.fields(lookup(Config(), f"{part}.{kind}"))


def migrate(values: dict) -> dict:
    """Nested config values of an earlier version (LEGACY_KEYS) moved to their place now."""
    values = dict(values)
    for old, new in LEGACY_KEYS.items():
        part, name = old.split(".")
        section, new_name = new.split(".")[1:]
        old_part = values.get(part)
        if isinstance(old_part, dict) and name in old_part:
            old_part = values[part] = dict(old_part)
            moved = old_part.pop(name)
            old_part[section] = {**old_part.get(section, {}), new_name: moved}
    return values


def merge(base: dict, override: dict) -> dict:
    """Recursively merge `override` into a copy of `base`."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def unflatten(dotted: dict[str, Any]) -> dict:
    """{"tmm.hidden": 512} -> {"tmm": {"hidden": 512}}."""
    nested: dict = {}
    for key, value in dotted.items():
        parts = key.split(".")
        node = nested
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"config key {key!r} conflicts with another override")
        node[parts[-1]] = value
    return nested


def preset_names() -> list[str]:
    return sorted(path.stem for path in PRESET_DIR.glob("*.yaml"))


def _read_yaml(source: str, seen: tuple[str, ...] = (), bases: bool = True) -> dict:
    """Read a preset name or YAML path, resolving `base:` chains (`bases=False`: the file's
    own values only)."""
    path = Path(source)
    if not (source.endswith((".yaml", ".yml")) or path.exists()):
        path = PRESET_DIR / f"{source}.yaml"
        if not path.exists():
            close = difflib.get_close_matches(source, preset_names(), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            known = ", ".join(preset_names())
            raise ConfigError(f"no preset or YAML file named {source!r}{hint}; presets: {known}")
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    if str(path) in seen:
        raise ConfigError(f"preset {path} names itself in its base: chain")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {error}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path} must hold a mapping of config sections")
    values.pop("description", None)
    base = values.pop("base", None)
    values = migrate(values)
    if not bases:
        return values
    names = [] if base is None else base if isinstance(base, list) else [base]
    merged: dict = {}
    for name in names:  # a list merges left to right: later bases override earlier ones
        merged = merge(merged, _read_yaml(str(name), (*seen, str(path))))
    return merge(merged, values)


def parse_override(text: str) -> tuple[str, Any]:
    """'tmm.hidden=512' -> ('tmm.hidden', 512); the value is read as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {text!r} must look like key=value (e.g. tmm.hidden=512)")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except (yaml.YAMLError, ValueError):  # ValueError: an integer of over 4300 digits
        value = raw
    return key.strip(), value


def load_config(source: str | None = None, overrides: list[str] | dict | None = None) -> Config:
    """Defaults <- preset (name or YAML path, following `base:`) <- `key=value` overrides."""
    values = _read_yaml(source) if source else {}
    if isinstance(overrides, dict):
        dotted = overrides
    else:
        dotted = dict(parse_override(item) for item in overrides or [])
    dotted = {LEGACY_KEYS.get(key, key): value for key, value in dotted.items()}
    for key in dotted:
        if key not in valid_keys():
            raise ConfigError(f"unknown config key {key!r}{_hint(key)}")
    config = from_dict(merge(values, unflatten(dotted)))
    # the keys of the last layer that picks tmm.kind, and of the layers after it, must be the
    # chosen kind's (a preset may pick another kind than its base's, ignoring the base's section)
    layers = [list(flatten(_read_yaml(source, bases=False) if source else {})), list(dotted)]
    for part in SECTIONS:
        picks = [index for index, keys in enumerate(layers) if f"{part}.kind" in keys]
        keys = sum(layers[picks[-1] if picks else 0 :], [])
        check_own_section(config, [key for key in keys if key.startswith(f"{part}.")])
    return config


def flatten(nested: dict, prefix: str = "") -> dict[str, Any]:
    """{"tmm": {"hidden": 512}} -> {"tmm.hidden": 512}: the inverse of `unflatten`."""
    flat: dict[str, Any] = {}
    for key, value in nested.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def preset_values(source: str) -> dict[str, Any]:
    """The dotted keys a preset or YAML file (with its `base:` chain) sets explicitly."""
    return flatten(_read_yaml(source))


def preset_chain(source: str) -> list[str]:
    """The files a preset or YAML reads, its bases first (`base:` chains, left to right)."""
    path = Path(source)
    if not (source.endswith((".yaml", ".yml")) or path.exists()):
        path = PRESET_DIR / f"{source}.yaml"
    values = yaml.safe_load(path.read_text()) or {}
    base = values.get("base") if isinstance(values, dict) else None
    names = [] if base is None else base if isinstance(base, list) else [base]
    return [file for name in names for file in preset_chain(str(name))] + [str(path)]


def matches_any(key: str, patterns: tuple[str, ...]) -> bool:
    """`key` is one of `patterns`, or under one ending in `*` ("eval.*")."""
    return any(
        key == pattern or (pattern.endswith("*") and key.startswith(pattern[:-1]))
        for pattern in patterns
    )


def preset_description(name: str) -> str:
    path = PRESET_DIR / f"{name}.yaml"
    values = yaml.safe_load(path.read_text()) or {}
    return str(values.get("description", "")).strip()


def resolved_dict(config: Config) -> dict[str, Any]:
    """`config` as nested plain values, without the sections of the kinds not chosen."""
    values = config.to_dict()
    for part, kinds in SECTIONS.items():
        for kind in kinds:
            if kind != values[part]["kind"]:
                del values[part][kind]
    return values


def save_config(config: Config, path: str | Path) -> None:
    """The resolved config as YAML, with only the chosen kinds' sections."""
    atomic_write(Path(path), yaml.safe_dump(resolved_dict(config), sort_keys=False))
