"""The Python API (`advise.load`, `Model`, `read_video`), batch `predict` and `export`."""

import csv
import io
import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from fabricate import tiny_config, ucf_tree
from safetensors.torch import save_file

import advise
from advise.cli import main
from advise.data.sampling import segment_indices
from advise.data.video import VideoDecodeError, read_frames
from advise.train.checkpoint import CheckpointError

README = Path(__file__).resolve().parents[1] / "README.md"


def run_cli(*args) -> int:
    return main([str(arg) for arg in args])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny pre-training run and a fine-tuning run from it, on a 2-class tree."""
    folder = tmp_path_factory.mktemp("api")
    tree = ucf_tree(folder / "tree")
    config = tiny_config(folder / "tiny.yaml", data={"root": str(tree)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert run_cli("pretrain", "--config", config, "--out", folder / "prp") == 0
        init = folder / "prp" / "checkpoints" / "last.safetensors"
        assert run_cli("finetune", "--config", config, "--out", folder / "ft", "--init", init) == 0
    videos = sorted(tree.rglob("*.mp4"))
    return {"tree": tree, "prp": folder / "prp", "ft": folder / "ft", "videos": videos}


@pytest.fixture
def model(trained):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return advise.load(trained["ft"])


def test_public_names_are_documented():
    for name in advise.__all__:
        assert getattr(advise, name).__doc__, name
    with pytest.raises(AttributeError):
        advise.not_a_name  # noqa: B018


def test_read_video_samples_as_documented(trained):
    video = trained["videos"][0]
    everything = advise.read_video(video)
    assert everything.dtype == torch.uint8 and everything.shape[1] == 3
    total = everything.shape[0]
    strided = advise.read_video(video, num_frames=3, stride=2)
    start = (total - 5) // 2
    expected = read_frames(video, [start, start + 2, start + 4])
    assert torch.equal(strided, torch.from_numpy(expected).permute(0, 3, 1, 2))
    uniform = advise.read_video(video, num_frames=4)  # segment centres
    assert torch.equal(uniform, everything[segment_indices(total, 4)])
    with pytest.raises(VideoDecodeError, match="missing.mp4"):
        advise.read_video(trained["tree"] / "missing.mp4")


def test_load_predict_and_features(trained, model, capsys):
    assert model.class_names == ["Left", "Right"] and model.stage == "finetune"
    assert "finetune" in repr(model) and "2 classes" in repr(model)
    video = trained["videos"][0]
    prediction = model.predict(video)
    assert sorted(prediction.classes) == ["Left", "Right"]
    assert prediction.scores == sorted(prediction.scores, reverse=True)
    assert sum(prediction.scores) == pytest.approx(1, abs=1e-3)
    assert prediction.views == "2x1" and prediction.label == prediction.classes[0]
    # the command line gives the same scores: one code path
    assert run_cli("predict", video, "--ckpt", trained["ft"], "--json") == 0
    printed = json.loads(capsys.readouterr().out)
    assert [row["score"] for row in printed["top"]] == prediction.scores

    clips, crops, frames, size = 2, 1, model.config.data.num_frames, model.preprocessing.size
    tokens = model.features(video, layer="ifm")
    pooled = model.features(video, layer="pooled")
    tmm = model.features(video, layer="tmm")
    assert tokens.shape[:3] == (clips * crops, model.network.ifm.embed_dim, frames)
    assert pooled.shape[:3] == (2, tokens.shape[1], frames) and pooled.shape[3] <= tokens.shape[3]
    assert tmm.shape == (2, model.network.tmm.out_dim, frames, *pooled.shape[3:])
    # the head pools the TMM features: the scores follow from them
    logits = model.network.head(tmm)
    assert torch.allclose(logits.softmax(1).mean(0), model.scores(video), atol=1e-6)
    with pytest.raises(ValueError, match="layer must be one of"):
        model.features(video, layer="head")

    # frames in hand: read_video + preprocess give the same tokens as the file's first view
    uniform = advise.read_video(video, num_frames=frames)
    clip = model.preprocess(uniform)
    assert clip.shape == (1, frames, 3, size, size)
    assert model.preprocess(uniform.permute(0, 2, 3, 1).numpy()).equal(clip)  # [T, H, W, 3]
    one_view = model.features(video, layer="ifm", views=(1, 1))
    assert torch.allclose(model.features(uniform, layer="ifm"), one_view)
    with pytest.raises(ValueError, match="uint8"):
        model.preprocess(uniform.float())


def test_pretraining_checkpoint_gives_features_not_classes(trained):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prp = advise.load(trained["prp"])
    assert prp.stage == "pretrain" and prp.class_names is None
    assert prp.features(trained["videos"][0]).ndim == 5
    with pytest.raises(CheckpointError, match="no action classes"):
        prp.predict(trained["videos"][0])


def test_load_refuses_other_ifm_weights(trained, model, tmp_path):
    """The IFM is rebuilt from its name and weights; other weights (by hash) are refused."""
    weights = model.network.ifm.model.state_dict()
    own, other = tmp_path / "own.safetensors", tmp_path / "other.safetensors"
    save_file({key: value.contiguous() for key, value in weights.items()}, own)
    save_file({key: value.contiguous() + 1 for key, value in weights.items()}, other)
    ifm = {"random_init": False, "weights": str(own)}
    data = {"root": str(trained["tree"])}
    config = tiny_config(tmp_path / "c.yaml", data=data, train={"epochs": 1}, ifm=ifm)
    assert run_cli("finetune", "--config", config, "--out", tmp_path / "ft") == 0
    assert (
        advise.load(tmp_path / "ft").ifm_record["weights_hash"] == model.ifm_record["weights_hash"]
    )
    with pytest.raises(CheckpointError, match="was trained on IFM 'mini'"):
        advise.load(tmp_path / "ft", overrides=[f"ifm.weights={other}"])


def test_readme_example_runs(trained, monkeypatch, capsys):
    """The README's Python example, run as written, on this test's run and video."""
    text = README.read_text()
    block = re.search(r"## Python API.*?```python\n(.*?)```", text, re.S).group(1)
    assert len(block.strip().splitlines()) <= 6
    code = block.replace("runs/demo/spatial/prp", str(trained["ft"]))
    code = code.replace("clip.mp4", str(trained["videos"][0]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exec(compile(code, "README.md", "exec"), {})  # noqa: S102
    assert capsys.readouterr().out.strip()


def _rows(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def test_batch_predict_files_folders_lists_and_bad_videos(trained, model, tmp_path, capsys):
    videos = trained["videos"]
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    listed = tmp_path / "list.txt"
    listed.write_text(f"# a comment\n{videos[0]} 1\n\nbroken.mp4\n")  # relative to the list
    out = tmp_path / "predictions.csv"
    code = run_cli("predict", trained["tree"] / "Left", listed, "--ckpt", trained["ft"],
                   "--out", out, "--top", "2", "--workers", "0", "--batch-size", "2")  # fmt: skip
    assert code == 0
    rows = _rows(out.read_text())
    left = sorted((trained["tree"] / "Left").rglob("*.mp4"))
    assert [row["path"] for row in rows] == [*map(str, left), str(videos[0]), str(broken)]
    assert [row["status"] for row in rows] == ["ok"] * (len(left) + 1) + ["skipped"]
    assert "broken.mp4" in rows[-1]["note"] and rows[-1]["class_1"] == ""
    summary = f"{len(left) + 2} videos: {len(left) + 1} predicted, 1 skipped"
    assert summary in capsys.readouterr().err
    for row in rows[:-1]:  # batched scores equal one-video scores
        single = model.predict(row["path"], top=2)
        assert [row["class_1"], row["class_2"]] == single.classes
        assert [float(row["score_1"]), float(row["score_2"])] == pytest.approx(single.scores)
    # with decoding workers and no --out: the same rows, as CSV on stdout
    assert run_cli("predict", listed, "--ckpt", trained["ft"], "--top", "2") == 0
    captured = capsys.readouterr()
    printed = _rows(captured.out)  # only the CSV on stdout; the summary on stderr
    assert "2 videos: 1 predicted, 1 skipped" in captured.err
    assert [row["path"] for row in printed] == [str(videos[0]), str(broken)]
    assert printed[0]["score_1"] == rows[len(left)]["score_1"]


def test_export_round_trip_and_plain_safetensors(trained, model, tmp_path):
    assert run_cli("evaluate", "--ckpt", trained["ft"]) == 0
    out = tmp_path / "exported"
    assert run_cli("export", trained["ft"], "--out", out, "--torchscript") == 0
    assert sorted(path.name for path in out.iterdir()) == [
        "README.md", "config.json", "model.safetensors", "tokens_to_logits.pt"
    ]  # fmt: skip
    record = json.loads((out / "config.json").read_text())
    assert record["class_names"] == ["Left", "Right"] and record["ifm"]["name"] == "mini"
    assert record["evaluations"][0]["views"] == "2x1"
    card = (out / "README.md").read_text()
    assert "## Evaluation" in card and "| eval-2x1.json | 2x1 |" in card
    # no optimiser state; exactly the model's trainable tensors
    plain = safetensors.torch.load_file(out / "model.safetensors")
    assert plain.keys() == model.network.trainable_state_dict().keys()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = advise.load(out)
    video = trained["videos"][1]
    assert again.predict(video).scores == model.predict(video).scores
    tokens = model.features(video, layer="ifm")
    scripted = torch.jit.load(str(out / "tokens_to_logits.pt"))
    with torch.no_grad():
        expected = model.network.forward_tokens(tokens)
    assert (scripted(tokens) - expected).abs().max() <= 1e-5


def test_an_edited_export_is_refused_naming_what_differs(trained, tmp_path, capsys):
    out = tmp_path / "exported"
    assert run_cli("export", trained["ft"], "--out", out) == 0
    config_file, weights = out / "config.json", out / "model.safetensors"
    original = config_file.read_text()
    video = trained["videos"][0]

    record = json.loads(original)
    record["config"]["tmm"]["bottleneck"]["hidden"] = 4
    config_file.write_text(json.dumps(record))
    capsys.readouterr()
    assert run_cli("predict", video, "--ckpt", out) == 2
    error = capsys.readouterr().err
    assert "config.tmm.bottleneck.hidden: config.json 4, model.safetensors 8" in error

    record = json.loads(original)
    record["class_names"] = ["Right", "Left"]
    config_file.write_text(json.dumps(record))
    assert run_cli("predict", video, "--ckpt", out) == 2
    assert "class_names" in capsys.readouterr().err

    config_file.write_text(original)  # the weights changed, their record kept
    tensors = safetensors.torch.load_file(weights)
    with safetensors.safe_open(str(weights), "pt") as handle:
        metadata = handle.metadata()
    name = next(iter(tensors))
    tensors[name] = tensors[name] + 1
    safetensors.torch.save_file(tensors, weights, metadata=metadata)
    assert run_cli("predict", video, "--ckpt", out) == 2
    assert "the weights were changed after export" in capsys.readouterr().err
    np.testing.assert_equal(len(list(out.iterdir())), 3)  # nothing written on refusal


def test_visualize_writes_maps_of_each_model(trained, tmp_path, capsys):
    from PIL import Image

    out = tmp_path / "maps"
    video = trained["videos"][0]
    code = run_cli("visualize", video, "--ckpt", trained["ft"], "--compare", trained["prp"],
                   "--labels", "fine-tuned", "pre-trained", "--out", out)  # fmt: skip
    assert code == 0
    record = json.loads((out / "activations.json").read_text())
    assert [row["label"] for row in record["rows"]] == ["IFM mini", "fine-tuned", "pre-trained"]
    frames = len(record["rows"][0]["peaks"])
    assert frames == 4  # tiny_config's data.num_frames
    assert [row["label"] for row in record["predictions"]] == ["fine-tuned"]  # PRP: no classes
    with Image.open(out / "activations.gif") as gif:
        assert gif.n_frames == frames and gif.size[0] == 4 * gif.size[1]  # frames + 3 rows
    assert Image.open(out / "activations.png").size[1] > 100
    assert run_cli("visualize", video, "--ckpt", trained["ft"], "--map", "cam",
                   "--out", tmp_path / "cam") == 0  # fmt: skip


def test_embed_writes_features_tsne_and_knn(trained, tmp_path, capsys):
    out = tmp_path / "embed"
    assert run_cli("embed", "--ckpt", trained["ft"], "--out", out) == 0
    record = json.loads((out / "embedding.json").read_text())
    assert record["test_videos"] == 4 and record["train_videos"] == 6
    assert set(record["knn_top1"]) == {"ifm", "tmm"}
    features = safetensors.torch.load_file(out / "features.safetensors")
    assert features["ifm_test"].shape[0] == 4 and features["tmm_train"].shape[0] == 6
    assert (out / "embedding.png").stat().st_size > 1000
    assert "kNN top-1 IFM tokens" in capsys.readouterr().out
