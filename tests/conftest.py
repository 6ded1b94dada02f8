"""Shared test settings: one torch thread (tiny ops run far faster single-threaded on the
shared 2-core machines), and a private cache folder so tests never touch the user's."""

from pathlib import Path

import pytest
import torch
from fabricate import tiny_config, ucf_tree


@pytest.fixture(autouse=True)
def single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    """Keep the mini IFM cache and Hugging Face lookups out of the user's folders, and never
    let a test reach for the network (tests that exercise downloading stub it)."""
    cache = tmp_path_factory.getbasetemp() / "xdg-cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """A tiny UCF101-layout tree of real videos (2 classes), shared by a test module."""
    return ucf_tree(tmp_path_factory.mktemp("data") / "tree")


@pytest.fixture
def config(tmp_path, tree) -> Path:
    """A tiny run config (`tiny_config`) over `tree`; a module may define its own."""
    return tiny_config(tmp_path / "tiny.yaml", data={"root": str(tree)})
