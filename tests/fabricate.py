"""Tiny real video datasets for tests: moving-square clips in every annotation format.

`dataset_tree(format, root)` writes a 2-class tree of real encoded videos in the layout the
reader of `format` expects (`advise.data.formats`) and returns the `data.*` overrides that make
`advise.data.loaders.read_split` read it. One builder per format: `ucf_tree`, `hmdb_tree`,
`diving48_tree`, `ssv2_tree`, `kinetics_tree`, `csv_tree`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml

from advise.data.video import write_video


def moving_square(num_frames: int, size: int, velocity: tuple[int, int], seed: int) -> np.ndarray:
    """[T, size, size, 3] uint8: a bright square moving at `velocity` px/frame over noise."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 60, size=(num_frames, size, size, 3), dtype=np.uint8)
    y, x = rng.integers(0, size, 2)
    for t in range(num_frames):
        top, left = (y + velocity[0] * t) % (size - 8), (x + velocity[1] * t) % (size - 8)
        frames[t, top : top + 8, left : left + 8] = (230, 200, 40)
    return frames


def ucf_tree(
    root: Path,
    classes: tuple[str, ...] = ("Left", "Right"),
    train_per_class: int = 3,
    test_per_class: int = 2,
    num_frames: int = 24,
    size: int = 32,
) -> Path:
    """A UCF101-layout tree of .mp4 files: class c moves horizontally at +-(c+1) px/frame."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "classInd.txt").write_text(
        "".join(f"{i + 1} {name}\n" for i, name in enumerate(classes))
    )
    train, test = [], []
    for label, name in enumerate(classes):
        velocity = (0, (label + 1) * (1 if label % 2 else -1))
        for i in range(train_per_class + test_per_class):
            relative = f"{name}/v_{name}_g{i:02d}.mp4"
            frames = moving_square(num_frames, size, velocity, seed=label * 100 + i)
            write_video(root / relative, frames, fps=25)
            if i < train_per_class:
                train.append(f"{relative} {label + 1}\n")
            else:
                test.append(f"{relative}\n")
    (root / "trainlist01.txt").write_text("".join(train))
    (root / "testlist01.txt").write_text("".join(test))
    return root


FORMATS = ("ucf101", "hmdb51", "diving48", "ssv2", "k400", "csv", "folders")

NUM_FRAMES = 20  # frames of every video the builders below write (ucf_tree: its argument)
HMDB51_CLASSES = ("brush_hair", "shoot_ball")
DIVING48_VOCAB = (("Back", "15som", "05Twis", "FREE"), ("Forward", "25som", "NoTwis", "PIKE"))
# Class ids deliberately not in alphabetical order: class names must follow the ids.
SSV2_LABELS = {
    "Pushing something from right to left": "0",
    "Pushing something from left to right": "1",
}
KINETICS_CLASSES = ("abseiling", "air drumming")
CSV_CLASSES = ("jumping", "rowing")


def class_video(path: Path, label: int, index: int, size: int = 32) -> Path:
    """A real NUM_FRAMES-frame video at `path` whose square moves (label + 1) px/frame
    horizontally: leftwards for even labels, rightwards for odd ones (as in `ucf_tree`)."""
    velocity = (0, (label + 1) * (1 if label % 2 else -1))
    return write_video(path, moving_square(NUM_FRAMES, size, velocity, seed=label * 100 + index))


def hmdb_tree(
    root: Path, train_per_class: int = 2, test_per_class: int = 1, unused_per_class: int = 1
) -> Path:
    """HMDB51 layout: `<root>/<class>/<name>.avi` and, in `<root>/testTrainMulti_7030_splits`,
    `<class>_test_split1.txt` with markers 1 (train), 2 (test) and 0 (unused). Returns that folder.
    """
    folder = root / "testTrainMulti_7030_splits"
    folder.mkdir(parents=True, exist_ok=True)
    markers = [1] * train_per_class + [2] * test_per_class + [0] * unused_per_class
    for label, name in enumerate(HMDB51_CLASSES):
        lines = []
        for index, marker in enumerate(markers):
            video = f"Clip_{index}_{name}_f_cm_np1_fr_med_{index}.avi"
            class_video(root / name / video, label, index)
            lines.append(f"{video} {marker} \n")  # the official files end lines with a space
        (folder / f"{name}_test_split1.txt").write_text("".join(lines))
    return folder


def diving48_tree(root: Path, train_per_class: int = 2, test_per_class: int = 1) -> Path:
    """Diving48 V2 layout: `<root>/<vid_name>.mp4`, and in `<root>/annotations`
    Diving48_V2_{train,test}.json and Diving48_vocab.json. Returns the annotations folder.

    Train entry i of a class spans frames start_frame = 2 + i to end_frame = 15 + i (inclusive,
    as in Diving48); test entries start at 1 and end past the video (end_frame = NUM_FRAMES + 5).
    """
    folder = root / "annotations"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "Diving48_vocab.json").write_text(json.dumps([list(v) for v in DIVING48_VOCAB]))
    train, test = [], []
    for label in range(len(DIVING48_VOCAB)):
        for index in range(train_per_class + test_per_class):
            name = f"dive{label}_{index:05d}"
            class_video(root / f"{name}.mp4", label, index)
            if index < train_per_class:
                train.append(
                    {
                        "vid_name": name,
                        "label": label,
                        "start_frame": 2 + index,
                        "end_frame": 15 + index,
                    }
                )
            else:
                test.append(
                    {
                        "vid_name": name,
                        "label": label,
                        "start_frame": 1,
                        "end_frame": NUM_FRAMES + 5,
                    }
                )
    (folder / "Diving48_V2_train.json").write_text(json.dumps(train, indent=1))
    (folder / "Diving48_V2_test.json").write_text(json.dumps(test, indent=1))
    return folder


def ssv2_tree(root: Path, train_per_class: int = 2, test_per_class: int = 1) -> Path:
    """Something-Something V2 layout: `<root>/<id>.webm`, and in `<root>/labels` labels.json,
    train.json and validation.json. Returns the labels folder."""
    folder = root / "labels"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "labels.json").write_text(json.dumps(SSV2_LABELS, indent=1))
    train, validation = [], []
    for template, class_id in SSV2_LABELS.items():
        label = int(class_id)
        bracketed = template.replace("something", "[something]")
        for index in range(train_per_class + test_per_class):
            video_id = str(1000 * (label + 1) + index)
            # Class 1 ("left to right") moves right, class 0 left: the label matches the video.
            class_video(root / f"{video_id}.webm", label, index)
            entry = {
                "id": video_id,
                "label": f"pushing pen #{index}",
                "template": bracketed,
                "placeholders": [f"pen #{index}"],
            }
            (train if index < train_per_class else validation).append(entry)
    (folder / "train.json").write_text(json.dumps(train, indent=1))
    (folder / "validation.json").write_text(json.dumps(validation, indent=1))
    return folder


def kinetics_clip_name(label: int, index: int) -> str:
    """The "<youtube_id>_<time_start:06d>_<time_end:06d>" of clip `index` of class `label`."""
    return f"yt{label}x{index:07d}_{10 * index:06d}_{10 * index + 10:06d}"


def kinetics_tree(root: Path, train_per_class: int = 2, test_per_class: int = 1) -> Path:
    """Kinetics-400 layout: train.csv (with an is_cc column) and validate.csv in `<root>`, clips
    `<root>/<youtube_id>_<start:06d>_<end:06d>.mp4` except class 1's, which sit in the class
    folder `<root>/air drumming/` (its test clip as .webm). train.csv lists one more clip of
    class 0, which is missing on disk (line 2 * train_per_class + 2). Returns `root`."""
    root.mkdir(parents=True, exist_ok=True)
    train = ["label,youtube_id,time_start,time_end,split,is_cc"]
    validate = ["label,youtube_id,time_start,time_end,split"]
    for label, name in enumerate(KINETICS_CLASSES):
        for index in range(train_per_class + test_per_class):
            clip = kinetics_clip_name(label, index)
            youtube_id, start, end = clip.split("_")
            folder = root if label == 0 else root / name
            suffix = ".webm" if label == 1 and index >= train_per_class else ".mp4"
            class_video(folder / f"{clip}{suffix}", label, index)
            if index < train_per_class:
                train.append(f"{name},{youtube_id},{int(start)},{int(end)},train,0")
            else:
                validate.append(f"{name},{youtube_id},{int(start)},{int(end)},val")
    missing = kinetics_clip_name(0, 99).split("_")[0]
    train.append(f"{KINETICS_CLASSES[0]},{missing},990,1000,train,0")
    (root / "train.csv").write_text("\n".join(train) + "\n")
    (root / "validate.csv").write_text("\n".join(validate) + "\n")
    return root


def csv_tree(root: Path, train_per_class: int = 2, test_per_class: int = 1) -> Path:
    """Generic CSV layout: `<root>/videos/<class>/clip<k>.<mp4|avi|webm>` (suffixes mixed) and
    `<root>/train.csv`, `<root>/test.csv` with a "path,label" header. Returns `root`."""
    suffixes = (".mp4", ".avi", ".webm")
    train, test = ["path,label"], ["path,label"]
    for label, name in enumerate(CSV_CLASSES):
        for index in range(train_per_class + test_per_class):
            relative = f"videos/{name}/clip{index}{suffixes[(label + index) % 3]}"
            class_video(root / relative, label, index)
            (train if index < train_per_class else test).append(f"{relative},{name}")
    (root / "train.csv").write_text("\n".join(train) + "\n")
    (root / "test.csv").write_text("\n".join(test) + "\n")
    return root


def dataset_tree(format: str, root: Path) -> dict[str, object]:
    """Write a tiny 2-class tree of `format` under `root`; the data.* overrides that read it.

    Train: 2 videos per class; test: 1 per class (Kinetics train also lists 1 missing clip).
    """
    overrides: dict[str, object] = {
        "data.format": format,
        "data.root": str(root),
        "data.annotations": "",
        "data.test_annotations": "",
        "data.split": 1,
    }
    if format == "ucf101":
        ucf_tree(root, train_per_class=2, test_per_class=1, num_frames=NUM_FRAMES)
    elif format == "hmdb51":
        overrides["data.annotations"] = str(hmdb_tree(root))
    elif format == "diving48":
        folder = diving48_tree(root)
        overrides["data.annotations"] = str(folder / "Diving48_V2_train.json")
        overrides["data.test_annotations"] = str(folder / "Diving48_V2_test.json")
    elif format == "ssv2":
        folder = ssv2_tree(root)
        overrides["data.annotations"] = str(folder / "train.json")
        overrides["data.test_annotations"] = str(folder / "validation.json")
        overrides["data.flip"] = False  # required: a flip swaps left and right (config.check)
    elif format == "k400":
        kinetics_tree(root)
        overrides["data.annotations"] = str(root / "train.csv")
        overrides["data.test_annotations"] = str(root / "validate.csv")
    elif format == "csv":
        csv_tree(root)
        overrides["data.annotations"] = str(root / "train.csv")
        overrides["data.test_annotations"] = str(root / "test.csv")
    elif format == "folders":
        class_folders_tree(root, per_class=(3, 3))  # 2 train + 1 test video per class
    else:
        raise ValueError(f"unknown format {format!r}; one of {FORMATS}")
    return overrides


def tiny_config(path: Path, **sections) -> Path:
    """A YAML config over the demo preset with a random-init mini IFM at 32 px, tiny TMM."""
    values = {
        "base": "demo",
        "ifm": {"random_init": True, "img_size": 32},
        "tmm": {"bottleneck": {"hidden": 8, "out": 16}},
        "head": {"hidden": 16},
        "data": {"num_workers": 0, "num_frames": 4, "stride": 1},
        "pretext": {"prp": {"clips_per_video": 2}},
        "optim": {"base_lr": 0.5, "warmup_epochs": 1},
        "train": {"epochs": 2, "batch_size": 2, "log_every": 1, "threads": 1},
        "eval": {"num_clips": 2, "num_crops": 1, "batch_size": 2},
    }
    for section, overrides in sections.items():
        values.setdefault(section, {}).update(overrides)
    path.write_text(yaml.safe_dump(values))
    return path


def wait_for_checkpoint_step(process, state_file: Path, step: int, timeout: float = 120) -> None:
    """Block until the run of `process` has checkpointed at least `step` steps (its JSON state
    file), so a test can kill it mid-run; fails if the run ends first."""
    import json
    import time

    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        if state_file.exists() and json.loads(state_file.read_text())["state"]["step"] >= step:
            break
        time.sleep(0.01)
    assert process.poll() is None, "the run ended before it could be killed"


FOLDERS_CLASSES = ("clapping", "jumping", "waving")
# Suffixes `class_folders_tree` cycles through: (suffix on disk, suffix written). .mov and
# .mkv are written as H.264 .mp4 and VP9 .webm (their own containers' kin) and renamed.
FOLDERS_SUFFIXES = (
    (".mp4", ".mp4"),
    (".AVI", ".avi"),
    (".webm", ".webm"),
    (".MOV", ".mp4"),
    (".mkv", ".webm"),
)


def _folder_video(path: Path, label: int, index: int, written_suffix: str) -> Path:
    """A real `class_video` at `path`, encoded as `written_suffix` and renamed to `path`."""
    written = class_video(path.with_name(f"{path.stem}.tmp{written_suffix}"), label, index)
    return written.rename(path)


def class_folders_tree(
    root: Path, per_class: int | tuple[int, ...] = 4, classes: tuple[str, ...] = FOLDERS_CLASSES
) -> Path:
    """Class-per-folder layout (`data.format=folders`): `<root>/<class>/clip<k><suffix>`, real
    videos (`class_video`, label = the class's position) whose suffixes cycle through
    `FOLDERS_SUFFIXES`. `per_class`: videos in every class, or one count per class (the
    classes are then the first len(per_class) of `classes`). Returns `root`."""
    counts = (per_class,) * len(classes) if isinstance(per_class, int) else per_class
    for label, (name, count) in enumerate(zip(classes[: len(counts)], counts, strict=True)):
        for index in range(count):
            suffix, written = FOLDERS_SUFFIXES[(label + index) % len(FOLDERS_SUFFIXES)]
            _folder_video(root / name / f"clip{index:03d}{suffix}", label, index, written)
    root.mkdir(parents=True, exist_ok=True)
    return root


def train_test_folders_tree(
    root: Path,
    train_per_class: tuple[int, ...] = (3, 3, 3),
    test_per_class: tuple[int, ...] = (2, 2, 2),
    classes: tuple[str, ...] = FOLDERS_CLASSES,
) -> Path:
    """`data.format=folders` with its own split: `<root>/train/<class>/train<k>.mp4` and
    `<root>/test/<class>/test<k>.mp4`, real videos; a class with 0 test videos gets no test
    folder. Returns `root`."""
    counts = zip(classes[: len(train_per_class)], train_per_class, test_per_class, strict=True)
    for label, (name, train, test) in enumerate(counts):
        for index in range(train):
            class_video(root / "train" / name / f"train{index}.mp4", label, index)
        for index in range(test):
            class_video(root / "test" / name / f"test{index}.mp4", label, 50 + index)
    return root
