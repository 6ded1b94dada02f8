"""Checkpoints: exact resume of model + AdamW + RNG, hash-verified pairs, crash safety."""

import json
import os
import random
import threading
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from advise.train import checkpoint
from advise.train.checkpoint import (
    CheckpointError,
    checkpoint_paths,
    load_checkpoint,
    optimizer_from_tensors,
    optimizer_to_tensors,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from advise.train.optim import build_optimizer, lr_at, set_lr

TOTAL_STEPS = 6


def make_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.3), nn.Linear(8, 3)
    )


def train(model: nn.Module, optimizer: torch.optim.Optimizer, steps: range) -> None:
    """Steps whose data depend on the step index and whose dropout uses the global RNG."""
    model.train()
    for step in steps:
        generator = torch.Generator().manual_seed(step)
        inputs, labels = torch.randn(6, 5, generator=generator), torch.arange(6) % 3
        set_lr(optimizer, lr_at(step, TOTAL_STEPS, 2, peak_lr=0.05))
        loss = nn.functional.cross_entropy(model(inputs), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def save_training(stem, model, optimizer, step):
    optimizer_tensors, optimizer_meta = optimizer_to_tensors(optimizer)
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()} | optimizer_tensors
    state = {"step": step, "optimizer": optimizer_meta, "rng": rng_state()}
    return save_checkpoint(stem, tensors, state)


def test_resume_is_bit_identical(tmp_path):
    model = make_model(seed=0)
    optimizer = build_optimizer(model.named_parameters(), 0.05, weight_decay=0.01)
    train(model, optimizer, range(3))
    save_training(tmp_path / "last", model, optimizer, step=3)

    resumed = make_model(seed=1)  # different initial weights: everything must come from disk
    resumed_optimizer = build_optimizer(resumed.named_parameters(), 0.05, weight_decay=0.01)
    tensors, state = load_checkpoint(tmp_path / "last")
    resumed.load_state_dict(
        {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    )
    optimizer_from_tensors(resumed_optimizer, tensors, state["optimizer"])
    assert state["step"] == 3

    # The restored optimiser state equals the saved one exactly, hyper-parameters included.
    saved, restored = optimizer.state_dict(), resumed_optimizer.state_dict()
    assert restored["param_groups"] == saved["param_groups"]
    for index, values in saved["state"].items():
        for name, value in values.items():
            assert torch.equal(restored["state"][index][name], value), (index, name)

    # Continue both runs: the resumed one first (it changes the global RNG), then the original
    # from the same RNG state it had at saving time.
    set_rng_state(state["rng"])
    train(resumed, resumed_optimizer, range(3, TOTAL_STEPS))
    set_rng_state(state["rng"])
    train(model, optimizer, range(3, TOTAL_STEPS))
    for (name, expected), actual in zip(
        model.state_dict().items(), resumed.state_dict().values(), strict=True
    ):
        assert torch.equal(actual, expected), name


def draws():
    return (
        [random.random() for _ in range(3)] + [random.gauss(0, 1)],
        np.random.rand(3).tolist() + [np.random.randn()],
        torch.rand(3).tolist() + torch.randint(0, 1000, (2,)).tolist(),
    )


def test_rng_state_round_trip_through_json():
    random.seed(3)
    np.random.seed(3)
    torch.manual_seed(3)
    random.gauss(0, 1)  # leave a cached second Gaussian in each generator
    np.random.randn()
    state = json.loads(json.dumps(rng_state()))
    expected = draws()
    assert draws() != expected  # the generators moved on
    set_rng_state(state)
    assert draws() == expected
    with pytest.raises(CheckpointError, match="RNG"):
        set_rng_state({"python": {}})


@pytest.fixture
def saved(tmp_path):
    tensors = {"weight": torch.arange(12.0).reshape(3, 4), "count": torch.tensor(7)}
    save_checkpoint(tmp_path / "ckpt", tensors, {"step": 5, "note": "first"})
    return tmp_path / "ckpt", tensors


@pytest.mark.parametrize("suffix", ["", ".json", ".safetensors"])
def test_load_by_stem_or_either_file(saved, suffix):
    stem, tensors = saved
    loaded, state = load_checkpoint(f"{stem}{suffix}")
    assert state == {"step": 5, "note": "first"}
    assert loaded.keys() == tensors.keys()
    assert all(torch.equal(loaded[name], tensors[name]) for name in tensors)


def test_shared_and_strided_tensors_are_saved(tmp_path):
    base = torch.arange(6.0).reshape(2, 3)
    tensors = {"a": base, "a_again": base, "column": base[:, 1]}
    save_checkpoint(tmp_path / "shared", tensors, {})
    loaded, _ = load_checkpoint(tmp_path / "shared")
    assert all(torch.equal(loaded[name], tensors[name]) for name in tensors)


def test_flipped_bytes_are_detected(saved):
    stem, _ = saved
    tensor_path, _ = checkpoint_paths(stem)
    data = bytearray(tensor_path.read_bytes())
    data[-5] ^= 0xFF  # inside the tensor payload: the file still parses as safetensors
    tensor_path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="torn|corrupt"):
        load_checkpoint(stem)


def test_hash_mismatch_missing_and_bad_json_are_detected(saved):
    stem, _ = saved
    tensor_path, state_path = checkpoint_paths(stem)
    record = json.loads(state_path.read_text())
    record["tensor_sha256"] = "0" * 64
    state_path.write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match="does not match"):
        load_checkpoint(stem)
    state_path.write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(stem)
    tensor_path.unlink()
    state_path.unlink()
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(stem)
    assert issubclass(CheckpointError, ValueError)


def test_missing_tensor_file_is_detected(saved):
    stem, _ = saved
    checkpoint_paths(stem)[0].unlink()
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(stem)


@pytest.mark.parametrize("failing_call", [1, 2, 3, 4])
def test_crash_during_save_never_yields_a_mixed_checkpoint(saved, monkeypatch, failing_call):
    """A save renames four files: the kept previous pair (2), then the tensors, then the JSON.
    A crash at any of them leaves a loadable checkpoint equal to the old one; a crash at the
    JSON rename (tensors already replaced) tears the newest pair, and loading falls back to the
    previous pair with a warning, never mixing old and new."""
    stem, tensors = saved
    real_replace = os.replace
    calls = []

    def crashing_replace(source, target):
        calls.append(target)
        if len(calls) == failing_call:
            raise OSError("simulated crash")
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", crashing_replace)
    with pytest.raises(OSError, match="simulated"):
        save_checkpoint(stem, {"weight": torch.zeros(3, 4), "count": torch.tensor(8)}, {"step": 6})
    monkeypatch.setattr(os, "replace", real_replace)
    assert not [p for p in stem.parent.iterdir() if p.name.endswith(".tmp")]
    if failing_call == 4:
        with pytest.warns(UserWarning, match="torn"):
            loaded, state = load_checkpoint(stem)
    else:
        loaded, state = load_checkpoint(stem)
    assert state["step"] == 5
    assert all(torch.equal(loaded[name], tensors[name]) for name in tensors)


class Killed(BaseException):
    """SIGKILL: the process stops here; no `except`/`finally` of it cleans up."""


class Killer:
    """Kills a process at chosen links and renames: the `at`-th `os.link` / `os.replace` call
    (counted over every save) is not made, and nothing after it touches the disk (temporary
    files stay, as after a real kill) until `restart`. fsync is skipped: a kill, unlike a power
    cut, keeps what reached the page cache."""

    def __init__(self, monkeypatch, at: tuple[int, ...]) -> None:
        self.calls, self.at, self.dead = 0, at, False
        for name in ("link", "replace", "unlink"):
            monkeypatch.setattr(os, name, self._wrap(name, getattr(os, name)))
        monkeypatch.setattr(os, "fsync", lambda descriptor: None)

    def _wrap(self, name, real):
        def call(*args, **kwargs):
            if self.dead:
                raise Killed
            if name != "unlink":
                self.calls += 1
                if self.calls in self.at:
                    self.dead = True
                    raise Killed
            return real(*args, **kwargs)

        return call

    def restart(self) -> None:
        self.dead = False


def contents(step: int, attempt: int) -> tuple[dict, dict]:
    """What a run saves at `step`; a step saved again after a restart differs (`attempt`), so a
    pair mixing two saves of one step cannot pass for either."""
    tensors = {"weight": torch.full((3, 4), step + attempt / 8), "count": torch.tensor(step)}
    return tensors, {"step": step, "attempt": attempt}


def assert_loads(stem, tensors: dict, state: dict) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a torn newest pair warns; what loads is checked here
        loaded, loaded_state = load_checkpoint(stem)
    assert loaded_state == state
    assert loaded.keys() == tensors.keys()
    assert all(torch.equal(loaded[name], tensors[name]) for name in tensors)
    return loaded_state


def run_with_kills(stem, killer: Killer) -> None:
    """Save steps 1, 2, ... as a run checkpointing every step does, until every kill happened
    and two saves finished after the last; after each kill, load (what `--resume` does) and go
    on from the step loaded. What loads is always the last save that returned, whole: never an
    older one, never a mix, never an error."""
    committed, step, attempt, whole_saves = None, 0, 0, 0
    while killer.calls < max(killer.at) or whole_saves < 2:
        tensors, state = contents(step + 1, attempt)
        try:
            save_checkpoint(stem, tensors, state)
        except Killed:
            killer.restart()
            attempt, whole_saves = attempt + 1, 0
            if committed is None:  # killed in the first save: nothing to resume
                with pytest.raises(CheckpointError, match="missing"):
                    load_checkpoint(stem)
                step = 0
                continue
            step = assert_loads(stem, *committed)["step"]
            continue
        committed, step, whole_saves = (tensors, state), step + 1, whole_saves + 1
    assert_loads(stem, *committed)
    # two whole saves in a row keep both files again: no link temporaries left behind
    assert not list(stem.parent.glob(".*.link.tmp"))


SAVE_CALLS = 6  # a save links the kept pair (link + rename each), renames tensors, then JSON


@pytest.mark.parametrize("first", range(1, 3 * SAVE_CALLS + 1))
def test_kills_at_any_link_or_rename_of_consecutive_saves_leave_the_last_finished_one(
    tmp_path, monkeypatch, first
):
    """A kill at each call of three consecutive saves (the first one, which keeps nothing,
    included), alone, then followed by a second kill at each call of the next two saves (the
    resumed run's, which keeps nothing when it resumed from the kept pair, and the one after)."""
    for second in (None, *range(first + 1, first + 2 * SAVE_CALLS + 1)):
        killer = Killer(monkeypatch, (first,) if second is None else (first, second))
        run_with_kills(tmp_path / f"{second}" / "last", killer)


def test_keeping_a_pair_already_kept_leaves_no_temporary(tmp_path, monkeypatch):
    """Killed between the two links, the kept tensors are the current ones (one file, two
    names); linking them again is a rename(2) onto the same file, which does nothing."""
    stem = tmp_path / "last"
    for step in (1, 2):
        save_checkpoint(stem, *contents(step, 0))
    killer = Killer(monkeypatch, (3,))  # the second link: tensors kept, JSON not yet
    with pytest.raises(Killed):
        save_checkpoint(stem, *contents(3, 0))
    killer.restart()
    assert_loads(stem, *contents(2, 0))
    save_checkpoint(stem, *contents(3, 1))
    assert not list(tmp_path.glob(".*.link.tmp"))
    assert_loads(stem, *contents(3, 1))


class PausedWriter:
    """Another process saving steps 4 and 5, one link or rename at a time: `advance(n)` lets
    it make n more (and waits until they are made)."""

    def __init__(self, monkeypatch, stem) -> None:
        self.permits, self.done = threading.Semaphore(0), threading.Condition()
        self.granted = self.made = 0
        self.thread = threading.Thread(target=self._save, args=(stem,), daemon=True)
        for name in ("link", "replace"):
            monkeypatch.setattr(os, name, self._gate(getattr(os, name)))
        self.thread.start()

    def _save(self, stem) -> None:
        for step in (4, 5):
            save_checkpoint(stem, *contents(step, 0))
        with self.done:
            self.made = float("inf")
            self.done.notify_all()

    def _gate(self, real):
        def call(*args, **kwargs):
            if threading.current_thread() is not self.thread:
                return real(*args, **kwargs)
            self.permits.acquire()
            try:
                return real(*args, **kwargs)
            finally:
                with self.done:
                    self.made += 1
                    self.done.notify_all()

        return call

    def advance(self, calls: int) -> None:
        for _ in range(calls):
            self.granted += 1
            self.permits.release()
        with self.done:
            assert self.done.wait_for(lambda: self.made >= self.granted, timeout=10)

    def finish(self) -> None:
        self.advance(2 * SAVE_CALLS)
        self.thread.join(timeout=10)


@pytest.mark.parametrize(
    "schedule",
    [{access: calls} for access in range(1, 13) for calls in (1, 2, 3, 4, 5, 6, 12)]
    + [dict.fromkeys(range(1, 40), 1), dict.fromkeys(range(1, 40, 3), 1)],
    ids=lambda schedule: ",".join(f"{access}:{calls}" for access, calls in schedule.items()),
)
def test_a_save_running_while_loading_never_yields_an_error_or_a_mix(
    tmp_path, monkeypatch, schedule
):
    """A run still saving while another process loads (in the DDP test, rank 0 orphaned by the
    killed launcher): the reader may see the JSON of step 3 and the tensors of step 4. Before
    the reader's n-th file access (stat or read), the writer makes `schedule[n]` more calls;
    loading returns a whole checkpoint of step 3 or later, never raises."""
    monkeypatch.setattr(os, "fsync", lambda descriptor: None)  # no power cut here: faster
    stem = tmp_path / "last"
    for step in (1, 2, 3):
        save_checkpoint(stem, *contents(step, 0))
    writer = PausedWriter(monkeypatch, stem)
    accesses = [0]

    def access(real):
        def call(*args, **kwargs):
            if threading.current_thread() is not writer.thread:
                accesses[0] += 1
                writer.advance(schedule.get(accesses[0], 0))
            return real(*args, **kwargs)

        return call

    monkeypatch.setattr(os, "stat", access(os.stat))
    monkeypatch.setattr(checkpoint, "_read", access(checkpoint._read))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the writer paused mid-save: torn at that moment
            loaded, state = load_checkpoint(stem)
    finally:
        writer.finish()
    assert state["step"] in (3, 4, 5)
    tensors, _ = contents(state["step"], 0)
    assert all(torch.equal(loaded[name], tensors[name]) for name in tensors)


def test_torn_pair_without_previous_is_refused(saved):
    stem, _ = saved
    tensor_path, _ = checkpoint_paths(stem)
    tensor_path.write_bytes(tensor_path.read_bytes()[:-8])
    with pytest.raises(CheckpointError, match="torn"):
        load_checkpoint(stem)


def test_unserialisable_state_leaves_previous_checkpoint(saved):
    stem, _ = saved
    with pytest.raises(TypeError, match="JSON"):
        save_checkpoint(stem, {"weight": torch.zeros(1)}, {"bad": object()})
    assert load_checkpoint(stem)[1]["step"] == 5


def test_optimizer_state_for_other_parameters_is_refused():
    model = make_model(seed=0)
    optimizer = build_optimizer(model.named_parameters(), 0.05, weight_decay=0.01)
    train(model, optimizer, range(1))
    tensors, meta = optimizer_to_tensors(optimizer)
    other = nn.Sequential(nn.Linear(5, 8), nn.Linear(8, 3))
    with pytest.raises(CheckpointError, match="parameter"):
        optimizer_from_tensors(build_optimizer(other.named_parameters(), 0.05, 0.01), tensors, meta)
    with pytest.raises(CheckpointError, match="missing tensor"):
        optimizer_from_tensors(optimizer, {}, meta)
