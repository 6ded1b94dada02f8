"""The `advise` command line: one small function per subcommand (parse, build, call).

Exit codes: 0 success; 2 a usage, config or data error (one line naming the bad value);
1 a runtime failure. Set ADVISE_DEBUG=1 to see tracebacks.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

from advise.config import (
    ConfigError,
    load_config,
    parse_override,
    preset_description,
    preset_names,
)


def _user_errors() -> tuple[type[Exception], ...]:
    """Exceptions that mean the user gave something unusable (exit 2)."""
    from advise.data.formats import AnnotationError
    from advise.data.store import StoreError
    from advise.data.video import VideoDecodeError
    from advise.files import FolderBusy
    from advise.models.ifm import IFMWeightsError, UnknownIFMError
    from advise.train.checkpoint import CheckpointError

    return (
        ConfigError,
        AnnotationError,
        IFMWeightsError,
        UnknownIFMError,
        StoreError,
        CheckpointError,
        FileNotFoundError,
        VideoDecodeError,  # only reaches here from `predict`: training skips bad videos
        FolderBusy,
    )


def _config(args: argparse.Namespace):
    return load_config(args.config, args.set)


def _training_config(args: argparse.Namespace):
    """The config a training command runs: --config and --set; with --resume and no --config,
    the run's own config (and --set)."""
    from advise.runs import resume_config

    if args.resume:
        return resume_config(Path(args.out), args.config, args.set)
    if args.config is None:
        raise ConfigError("--config is required (or --resume to continue the run in --out)")
    return _config(args)


def _invocation(args: argparse.Namespace) -> dict:
    """What run.json records of how a run was started."""
    from advise.config import preset_chain

    return {
        "argv": ["advise", *args.argv],
        "command": args.command,
        "config": args.config,
        "preset_chain": preset_chain(args.config) if args.config else None,
        "overrides": list(args.set),
        "resume": bool(getattr(args, "resume", False)),
    }


def cmd_synth(args: argparse.Namespace) -> None:
    from advise.data.synthetic import TASKS, generate

    tasks = [args.task] if args.task else list(TASKS)
    for task in tasks:
        out = Path(args.out) / task if len(tasks) > 1 else Path(args.out)
        path = generate(out, task, num_videos=args.videos, seed=args.seed)
        print(f"{task}: {path}")


def cmd_check_data(args: argparse.Namespace) -> None:
    from advise.runs import check_data

    report, paths = check_data(_config(args), Path(args.out), workers=args.workers)
    print(
        f"checked {len(report.videos)} videos: {len(report.failed)} failed (quarantined), "
        f"{len(report.warned)} usable with warnings. Report: {paths['markdown']}\n"
        f"Skip the failed ones in training with --set data.quarantine={paths['quarantine']}"
    )


def cmd_extract(args: argparse.Namespace) -> None:
    from advise.runs import extract, say

    out = extract(
        _config(args),
        Path(args.out),
        subset=args.subset,
        views=args.views,
        frame_stride=args.frame_stride,
        dtype=args.dtype,
        pool=args.pool,
    )
    say(f"feature store: {out} (train from it with --set data.source=store:{out})")


def cmd_pretrain(args: argparse.Namespace) -> None:
    from advise.runs import pretrain, say

    config = _training_config(args)
    result = pretrain(config, Path(args.out), resume=args.resume, invocation=_invocation(args))
    say(f"pre-training done: {result.steps} steps, checkpoint {result.checkpoint}.safetensors")


def cmd_finetune(args: argparse.Namespace) -> None:
    from advise.runs import finetune, say

    init = Path(args.init) if args.init else None
    config, invocation = _training_config(args), _invocation(args)
    result = finetune(
        config, Path(args.out), init, args.resume, invocation=invocation,
        transplant=args.transplant,
    )  # fmt: skip
    say(f"fine-tuning done: {result.steps} steps, checkpoint {result.checkpoint}.safetensors")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from advise.config import preset_values
    from advise.runs import evaluate_run, parse_overrides, parse_views, say

    views = parse_views(args.views) if args.views else None
    _config(args)  # every key and value checked, as for any command
    settings = preset_values(args.config) if args.config else None
    out = Path(args.out) if args.out else None
    result, out_file = evaluate_run(
        Path(args.ckpt), settings, parse_overrides(args.set), views=views, out=out
    )
    if result.get("stage") == "pretrain":
        measures = ", ".join(
            f"{key} {value:.2f}" if isinstance(value, float) else f"{key} {value}"
            for key, value in result.items()
            if key not in ("stage", "pretext", "checkpoint", "data", "environment")
        )
        say(f"{result['pretext']} pretext of {result['checkpoint']}: {measures}  -> {out_file}")
        return
    say(
        f"{result['checkpoint']} (step {result['checkpoint_step']}): {result['num_videos']} "
        f"videos, {result['views']} views ({result['views_combined']}): top-1 "
        f"{result['top1']:.2f}  top-5 {result['top5']:.2f}  single-view top-1 "
        f"{result['single_view_top1']:.2f}  -> {out_file}"
    )


def cmd_predict(args: argparse.Namespace) -> None:
    from advise.api import LIST_SUFFIXES
    from advise.runs import parse_views, predict

    views = parse_views(args.views) if args.views else None
    one = args.videos[0] if len(args.videos) == 1 else None
    if one is not None and args.out is None and not Path(one).is_dir() \
            and Path(one).suffix.lower() not in LIST_SUFFIXES:  # fmt: skip
        result = predict(Path(one), Path(args.ckpt), args.set, views=views, top=args.top)
        if result["warning"]:
            print(f"warning: {result['warning']}", file=sys.stderr)
        if args.json:
            print(json.dumps(result))
            return
        print(f"{result['video']} ({result['views']} views)")
        width = max(len(row["class"]) for row in result["top"])
        for rank, row in enumerate(result["top"], start=1):
            print(f"{rank}. {row['class']:<{width}}  {row['score']:.4f}")
        return
    _predict_many(args, views)


def _predict_many(args: argparse.Namespace, views: tuple[int, int] | None) -> None:
    """Many videos: one CSV row each (a video that cannot be read is a row with its reason)."""
    from advise.api import load, video_paths
    from advise.runs import predict_csv

    paths = video_paths(args.videos)
    model = load(args.ckpt, overrides=args.set)
    out = Path(args.out) if args.out else None
    summary = predict_csv(model, paths, out, views, args.top, args.batch_size, args.workers)
    print(
        f"{summary['videos']} videos: {summary['predicted']} predicted, {summary['skipped']} "
        f"skipped, {summary['videos_per_second']:.2f} videos/s" + (f" -> {out}" if out else ""),
        file=sys.stderr,  # stdout may be the CSV
    )


def cmd_visualize(args: argparse.Namespace) -> None:
    from advise.runs import say
    from advise.visualize import visualize

    checkpoints = [args.ckpt, *args.compare]
    record = visualize(args.video, checkpoints, Path(args.out), args.labels, args.map)
    rows = ", ".join(row["label"] for row in record["rows"])
    say(f"activation maps ({args.map}) of {rows} -> {args.out}/activations.png, .gif, .json")


def cmd_embed(args: argparse.Namespace) -> None:
    from advise.api import load
    from advise.config import preset_values
    from advise.embed import embed
    from advise.runs import say

    if args.config:
        _config(args)  # every key and value checked, as for any command
    settings = preset_values(args.config) if args.config else None
    model = load(args.ckpt, overrides=args.set, settings=settings)
    record = embed(model, Path(args.out))
    knn = record["knn_top1"]
    say(
        f"{record['test_videos']} test videos (kNN memory: {record['train_videos']} train): "
        f"kNN top-1 IFM tokens {knn['ifm']:.1f}%, TMM output {knn['tmm']:.1f}% (chance "
        f"{record['chance']:.1f}%) -> {args.out}/embedding.png"
    )


def cmd_export(args: argparse.Namespace) -> None:
    from advise.exported import export
    from advise.runs import say

    record = export(Path(args.ckpt), Path(args.out), torchscript=args.torchscript)
    extra = f", TorchScript within {record['torchscript']['max_abs_difference']:.1e}" \
        if "torchscript" in record else ""  # fmt: skip
    say(
        f"exported {record['stage']} model ({len(record['weights']['tensors'])} tensors, IFM "
        f"{record['ifm']['name']}{extra}) -> {args.out}"
    )


def cmd_summary(args: argparse.Namespace) -> None:
    from advise.runs import summary

    result = summary(_config(args))
    if args.json:
        print(json.dumps(result))
        return
    width = max(len(key) for key in result)
    for key, value in result.items():
        text = f"{value:,}" if isinstance(value, int) else str(value)
        print(f"{key:<{width}}  {text}")


def cmd_config(args: argparse.Namespace) -> None:
    from advise.config_info import describe, format_description

    description = describe(args.config, args.set)
    if args.json:
        print(json.dumps(description))
        return
    print(format_description(description), end="")


def cmd_plot(args: argparse.Namespace) -> None:
    from advise.plot import plot_runs

    try:
        out = plot_runs([Path(run) for run in args.runs], Path(args.out), labels=args.labels)
    except ValueError as error:  # a bad metrics file or arguments: the user's to fix
        raise ConfigError(str(error)) from None
    print(f"wrote {out}")


def cmd_ablate(args: argparse.Namespace) -> None:
    from advise.ablate import load_grids, run_ablations
    from advise.jobs import usable_cores

    out = Path(args.out)
    if args.jobs is not None and args.jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {args.jobs}")
    settings = dict(parse_override(item) for item in args.set)
    grids = load_grids(args.grid, args.seeds, settings)  # every grid checked before any work
    folders = [out / name if len(grids) > 1 else out for name, _ in grids]
    documents = run_ablations(
        [(grid, folder) for (_, grid), folder in zip(grids, folders, strict=True)], out,
        jobs=args.jobs or usable_cores(), run=not args.report_only,
    )  # fmt: skip
    for (name, _), folder, document in zip(grids, folders, documents, strict=True):
        print(f"{name}: {document['finished']}/{document['runs']} runs; wrote "
              f"{folder / 'report.md'}")  # fmt: skip
        for row in document["verdicts"]:
            print(f"  {row['name']}: {row['verdict']} (a - b = {row['difference']}, margin "
                  f"{row['margin']})")  # fmt: skip


def cmd_ifms(args: argparse.Namespace) -> None:
    from advise.report import markdown_table
    from advise.runs import ifm_table

    rows = ifm_table()
    if args.json:
        print(json.dumps(rows))
        return
    header = ["name", "timm model", "width", "patch", "grid @ size", "params", "weights"]
    cells = [
        [
            row["name"],
            row["timm_model"],
            str(row["embed_dim"]),
            str(row["patch_size"]),
            f"{row['token_grid'][0]}x{row['token_grid'][1]} @ {row['img_size']}",
            f"{row['params'] / 1e6:.1f}M",
            f"cached: {row['weights_cached']}"
            if row["weights_cached"]
            else f"not cached; {row['weights_source']}",
        ]
        for row in rows
    ]
    print(markdown_table(cells, header))
    print(
        "\nCombine two with '+' (ifm.name=clip-l14+mae-l16). Weights come from the Hugging Face "
        "cache (downloaded unless --offline) or ifm.weights=FILE; ifm.random_init=true for none."
    )


def cmd_presets(args: argparse.Namespace) -> None:
    for name in preset_names():
        print(f"{name}\n    {preset_description(name)}")


def cmd_demo(args: argparse.Namespace) -> None:
    from advise.demo import run_demo

    if args.jobs is not None and args.jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {args.jobs}")
    run_demo(
        Path(args.out), quick=args.quick, seed=args.seed, features=args.features,
        workers=args.jobs,
    )  # fmt: skip


def cmd_bench(args: argparse.Namespace) -> None:
    from advise.bench import default_settings, run_bench

    settings = default_settings(
        args.device, args.ifm_online, batch=args.batch, frames=args.frames, size=args.size,
        iters=args.iters, warmup=args.warmup, threads=args.threads, workers=args.workers,
        in_memory=args.in_memory or None, variants=args.variants, isolate=not args.in_process,
        ifm_precision=args.ifm_precision, tmm_precision=args.tmm_precision, repeats=args.repeats,
    )  # fmt: skip
    run_bench(settings, Path(args.out))
    print(f"wrote {Path(args.out) / 'bench.json'} and {Path(args.out) / 'bench.md'}")


def _add_config_options(
    parser: argparse.ArgumentParser, required: bool = True, help_text: str = ""
) -> None:
    parser.add_argument("--config", required=required, help=help_text or "preset name or YAML file")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set tmm.bottleneck.hidden=512 (repeatable)",
    )
    parser.add_argument(
        "--offline",
        action="store_true",
        help="never touch the network: IFM weights only from the local cache or ifm.weights",
    )


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    """Options of the commands that train: config, run folder, resume."""
    _add_config_options(
        parser, required=False,
        help_text="preset name or YAML file (required, except with --resume: the run's own)",
    )  # fmt: skip
    parser.add_argument("--out", required=True, help="run folder")
    parser.add_argument(
        "--resume", action="store_true",
        help="continue the run in --out, with its own config (--set may change train.epochs "
        "and other keys that do not change what a step computes)",
    )  # fmt: skip


def _positive_int(text: str) -> int:
    value = int(text) if text.lstrip("-").isdigit() else 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text) if text.lstrip("-").isdigit() else -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}")
    return value


def _demo_arguments(demo: argparse.ArgumentParser) -> None:
    demo.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    demo.add_argument("--quick", action="store_true", help="a smaller, faster demo")
    demo.add_argument(
        "--seed", type=_non_negative_int, default=0,
        help="seed of the benchmark's videos and of every training run (default 0)",
    )  # fmt: skip
    demo.add_argument(
        "--features", choices=["store", "online", "fp16", "int8"], default="store",
        help="store: extract tokens once (fp32) and train from them (default); online: "
        "encode frames every epoch; fp16/int8: a store of that precision",
    )  # fmt: skip
    demo.add_argument(
        "--jobs", type=int, default=None,
        help="runs at a time, each in its own process on one thread (default: the usable CPU "
        "cores from a store, 1 online); results do not depend on it",
    )  # fmt: skip


def _synth_arguments(synth: argparse.ArgumentParser) -> None:
    synth.add_argument("--out", required=True)
    synth.add_argument("--task", choices=["spatial", "temporal", "pool"])
    synth.add_argument("--videos", type=int, help="number of videos (default: the demo's)")
    synth.add_argument("--seed", type=int, default=0)


def _check_data_arguments(check: argparse.ArgumentParser) -> None:
    _add_config_options(check)
    check.add_argument("--out", required=True, help="folder for the report and quarantine.txt")
    check.add_argument(
        "--workers", type=_non_negative_int, default=os.cpu_count() or 1,
        help="decoding processes (default: one per CPU; 0 = in this process)",
    )  # fmt: skip


def _extract_arguments(extract: argparse.ArgumentParser) -> None:
    _add_config_options(extract)
    extract.add_argument(
        "--out", required=True, help="store folder (an existing one resumes and is repaired)"
    )
    extract.add_argument("--subset", choices=["train", "test", "all"], default="all")
    extract.add_argument(
        "--views", type=int, choices=[1, 3], default=1,
        help="deterministic spatial views per frame: 1 centre crop, or 3 crops (default 1)",
    )  # fmt: skip
    extract.add_argument(
        "--frame-stride", type=_positive_int, default=1, help="store every k-th frame (default 1)"
    )
    extract.add_argument(
        "--dtype", choices=["fp16", "fp32", "int8"], default="fp16",
        help="stored precision; int8 uses per-channel scales (default fp16)",
    )  # fmt: skip
    extract.add_argument(
        "--pool", action="store_true", help="apply the config's SFU pooling before storing"
    )


def _finetune_arguments(finetune: argparse.ArgumentParser) -> None:
    _add_run_options(finetune)
    finetune.add_argument("--init", help="pre-training checkpoint to inherit the TMM from")
    finetune.add_argument(
        "--transplant", action="store_true",
        help="--init may come from another IFM: inherit its TMM alone (plug-and-play); set "
        "sfu.adapter to the TMM's input width when this IFM's tokens are of another width",
    )  # fmt: skip


def _evaluate_arguments(evaluate: argparse.ArgumentParser) -> None:
    _add_config_options(
        evaluate, required=False,
        help_text="preset or YAML whose data and eval keys to use (the model is the "
        "checkpoint's own); default: the checkpoint's config",
    )  # fmt: skip
    evaluate.add_argument(
        "--ckpt", required=True, help="checkpoint (.safetensors) or run folder (its last)"
    )
    evaluate.add_argument("--views", help="CLIPSxCROPS, e.g. 2x3 (default: eval.* in config)")
    evaluate.add_argument(
        "--out", help="folder for eval-VIEWS.json and its figures (default: the run folder)"
    )


def _predict_arguments(predict: argparse.ArgumentParser) -> None:
    predict.add_argument(
        "videos", nargs="+", metavar="PATH",
        help="video files, folders (searched for videos) and list files (.txt, .lst, .list, "
        ".csv: one path per line, first field); one video file prints its top classes, "
        "anything more writes a CSV",
    )  # fmt: skip
    predict.add_argument(
        "--ckpt", required=True,
        help="fine-tuned checkpoint (.safetensors), run folder or exported model folder",
    )  # fmt: skip
    predict.add_argument("--views", help="CLIPSxCROPS (default: the checkpoint's eval.*)")
    predict.add_argument("--top", type=_positive_int, default=5, help="classes to report")
    predict.add_argument("--json", action="store_true", help="one video: print one JSON object")
    predict.add_argument(
        "--out", help="CSV file of the predictions (default: printed; a CSV for many videos)"
    )
    predict.add_argument(
        "--batch-size", type=_positive_int, default=4, help="videos per forward pass"
    )
    predict.add_argument(
        "--workers", type=_non_negative_int, default=2, help="processes decoding videos"
    )
    predict.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override the checkpoint's config, e.g. --set ifm.weights=/path (repeatable)",
    )  # fmt: skip
    predict.add_argument("--offline", action="store_true", help="never touch the network")


def _visualize_arguments(visualize: argparse.ArgumentParser) -> None:
    visualize.add_argument("video", help="a video file")
    visualize.add_argument(
        "--ckpt", required=True, help="checkpoint, run folder or exported model folder"
    )
    visualize.add_argument(
        "--compare", nargs="*", default=[], metavar="CKPT",
        help="more checkpoints on the same IFM, one row each (e.g. a scratch run)",
    )  # fmt: skip
    visualize.add_argument("--labels", nargs="*", help="row labels (default: run folder names)")
    visualize.add_argument(
        "--map", choices=("norm", "cam"), default="norm",
        help="norm: channel norm of the TMM output; cam: Grad-CAM of the predicted class",
    )  # fmt: skip
    visualize.add_argument("--out", required=True, help="folder for the PNG, GIF and JSON")
    visualize.add_argument("--offline", action="store_true", help="never touch the network")


def _embed_arguments(embed: argparse.ArgumentParser) -> None:
    _add_config_options(
        embed, required=False,
        help_text="preset or YAML whose data keys to use (default: the checkpoint's own data)",
    )  # fmt: skip
    embed.add_argument(
        "--ckpt", required=True, help="checkpoint, run folder or exported model folder"
    )
    embed.add_argument("--out", required=True, help="folder for the PNG, features and JSON")


def _export_arguments(export: argparse.ArgumentParser) -> None:
    export.add_argument("ckpt", help="checkpoint (.safetensors) or run folder (its last)")
    export.add_argument("--out", required=True, help="the folder to write (new, or an export)")
    export.add_argument(
        "--torchscript", action="store_true",
        help=f"also write {'tokens_to_logits.pt'}, TorchScript of tokens -> logits, checked "
        "to match the model within 1e-5",
    )  # fmt: skip
    export.add_argument("--offline", action="store_true", help="never touch the network")


def _summary_arguments(summary: argparse.ArgumentParser) -> None:
    _add_config_options(summary)
    summary.add_argument("--json", action="store_true", help="print one JSON object")


def _config_arguments(config: argparse.ArgumentParser) -> None:
    _add_config_options(config)
    config.add_argument("--json", action="store_true", help="print one JSON object")


def _plot_arguments(plot: argparse.ArgumentParser) -> None:
    plot.add_argument("runs", nargs="+", metavar="RUN", help="run folders (with metrics.jsonl)")
    plot.add_argument("--out", required=True, help="the figure to write (.png)")
    plot.add_argument("--labels", nargs="+", help="one legend label per run (default: names)")


def _ablate_arguments(ablate: argparse.ArgumentParser) -> None:
    ablate.add_argument("grid", help="a grid YAML, or a built-in grid's name")
    ablate.add_argument("--out", required=True, help="folder of the grid's runs and report")
    ablate.add_argument("--seeds", type=int, nargs="+", help="replace the grid's seeds")
    ablate.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="a config value for every run of the grid, over the grid's own `set:`, "
        "`pretrain:` and `finetune:` (e.g. --set train.precision=fp32; repeatable; not a key "
        "the grid varies); a run it changes is another run",
    )  # fmt: skip
    ablate.add_argument(
        "--jobs", type=int, default=None,
        help="runs at a time, each in its own process on one thread (default: the CPU cores "
        "this process may use); results do not depend on it",
    )  # fmt: skip
    ablate.add_argument(
        "--report-only", action="store_true",
        help="run nothing: write the reports of the runs finished so far (of a grid still "
        "running in another process, or stopped)",
    )  # fmt: skip


def _ifms_arguments(ifms: argparse.ArgumentParser) -> None:
    ifms.add_argument("--json", action="store_true", help="print a JSON list")


def _bench_arguments(bench: argparse.ArgumentParser) -> None:
    bench.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda if available")
    bench.add_argument("--batch", type=_positive_int, help="clips per step (cuda 8, cpu 2)")
    bench.add_argument("--frames", type=_positive_int, help="frames per clip (default 8)")
    bench.add_argument("--size", type=_positive_int, help="frame size (224; mini IFM 64)")
    bench.add_argument("--iters", type=_positive_int, help="timed iterations (default 5)")
    bench.add_argument("--warmup", type=_non_negative_int, help="warm-up iterations (default 2)")
    bench.add_argument("--variants", nargs="+", help="a-b16-256 a-l14-256 a-b16-2048 r3d50 "
                       "a-b16-256-store a-l14-256-store a-b16-2048-store mini mini-store "
                       "(default: by --ifm-online)")  # fmt: skip
    bench.add_argument(
        "--ifm-online", choices=["vit", "mini"], default="vit",
        help="IFM of the default online-vs-store pair: vit (Table 6) or mini (demo preset)",
    )  # fmt: skip
    bench.add_argument("--threads", type=_non_negative_int, help="torch threads (0: default)")
    bench.add_argument("--workers", type=_non_negative_int, help="store DataLoader workers (0)")
    bench.add_argument(
        "--in-memory", action="store_true",
        help="hold the store's tokens in memory, as ablate and demo train (no workers)",
    )  # fmt: skip
    bench.add_argument("--in-process", action="store_true", help="no process per variant")
    bench.add_argument(
        "--ifm-precision",
        choices=["auto", "fp32", "bf16"],
        help="IFM precision for every variant (default: each preset's, auto)",
    )
    bench.add_argument(
        "--tmm-precision", choices=["fp32", "bf16"],
        help="the trainable part of every variant, R3D-50 included: fp32 (default) or bf16 "
        "autocast",
    )  # fmt: skip
    bench.add_argument(
        "--repeats", type=_positive_int,
        help="passes over the variants, interleaved, timings pooled (default 1)",
    )  # fmt: skip
    bench.add_argument("--out", required=True, help="folder for bench.json and bench.md")


def _no_arguments(parser: argparse.ArgumentParser) -> None:
    """For a command that takes none."""


# One subcommand: its name, its help line, what adds its arguments, the function it runs.
Command = tuple[
    str, str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], None]
]
# In the order `advise --help` lists them.
COMMANDS: tuple[Command, ...] = (
    ("demo", "run the whole method on the built-in benchmark", _demo_arguments, cmd_demo),
    ("synth", "write the built-in benchmark as video files", _synth_arguments, cmd_synth),
    ("check-data", "decode every video of a dataset; report and quarantine bad ones",
     _check_data_arguments, cmd_check_data),
    ("extract", "run the frozen IFM once over a dataset and store its tokens",
     _extract_arguments, cmd_extract),
    ("pretrain", "pre-train the temporal module with the pretext task (pretext.kind)",
     _add_run_options, cmd_pretrain),
    ("finetune", "fine-tune for action recognition", _finetune_arguments, cmd_finetune),
    ("evaluate", "multi-view testing of a checkpoint", _evaluate_arguments, cmd_evaluate),
    ("predict", "top classes of videos (one printed, many to a CSV)", _predict_arguments,
     cmd_predict),
    ("visualize", "activation maps of models on one video, frame by frame (PNG and GIF)",
     _visualize_arguments, cmd_visualize),
    ("embed", "t-SNE and kNN top-1 of the test videos' IFM and TMM features",
     _embed_arguments, cmd_embed),
    ("export", "a trained model as a self-contained folder (weights, config, model card)",
     _export_arguments, cmd_export),
    ("summary", "parameter and MAC counts of a config", _summary_arguments, cmd_summary),
    ("config", "the resolved config, its derived values (peak lr, steps, parameters) and "
     "the warnings a run would give", _config_arguments, cmd_config),
    ("ablate", "a grid of configurations over seeds, resumable, with tables and verdicts",
     _ablate_arguments, cmd_ablate),
    ("plot", "loss, accuracy, lr and validation curves of runs, on shared axes, to a PNG",
     _plot_arguments, cmd_plot),
    ("ifms", "list the image foundation models and their weights", _ifms_arguments, cmd_ifms),
    ("bench", "measure the training cost per iteration of Table 6's variants",
     _bench_arguments, cmd_bench),
    ("presets", "list the built-in presets", _no_arguments, cmd_presets),
)  # fmt: skip


# commands that never train: started without torch.distributed (and torch, where they can)
LIGHT_COMMANDS = ("config", "presets", "plot")


def build_parser() -> argparse.ArgumentParser:
    """The `advise` parser: one subcommand per row of `COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="advise",
        description="Video self-supervised learning on top of frozen image foundation models.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text, add_arguments, func in COMMANDS:
        command = commands.add_parser(name, help=help_text)
        add_arguments(command)
        command.set_defaults(func=func)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    warnings.simplefilter("default", UserWarning)
    offline_before = os.environ.get("HF_HUB_OFFLINE")
    if getattr(args, "offline", False):
        os.environ["HF_HUB_OFFLINE"] = "1"  # read by advise.models.ifm and huggingface_hub
    light = args.command in LIGHT_COMMANDS
    if not light:
        from advise.jobs import keep_freed_memory
        from advise.train import distributed  # imports torch

        keep_freed_memory()

    try:
        if not light:
            distributed.init_from_env()  # launched by torchrun: join the process group
        args.func(args)
    except KeyboardInterrupt:
        print("advise: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - the one place errors become exit codes
        if os.environ.get("ADVISE_DEBUG"):
            raise
        user_error = isinstance(error, ConfigError) or isinstance(error, _user_errors())
        code = 2 if user_error else 1  # (a ConfigError is told without importing torch)
        message = str(error) or type(error).__name__
        if isinstance(error, FileNotFoundError) and error.filename:
            message = f"file not found: {error.filename}"
        print(f"advise: error: {message}", file=sys.stderr)
        return code
    finally:  # --offline holds for this command only (main may be called again in-process)
        if not light:
            distributed.shutdown()
        if offline_before is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = offline_before
    return 0


if __name__ == "__main__":
    sys.exit(main())
