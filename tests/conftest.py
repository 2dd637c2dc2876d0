"""Test configuration: hardware tiers skip cleanly where the hardware is absent."""

from __future__ import annotations

import os
import tempfile

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _npu_available() -> bool:
    from pangu_core import device

    return device.probe("npu").available


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    cuda = npu = None
    for item in items:
        # Markers, not keywords: a parameter id such as "npu" must not move a test into a tier.
        if item.get_closest_marker("cuda") is not None:
            cuda = _cuda_available() if cuda is None else cuda
            if not cuda:
                item.add_marker(pytest.mark.skip(reason="cuda tier: no CUDA device on this machine"))
        if item.get_closest_marker("npu") is not None:
            npu = _npu_available() if npu is None else npu
            if not npu:
                item.add_marker(pytest.mark.skip(reason="npu tier: no Ascend NPU / torch_npu on this machine"))


@pytest.fixture
def one_torch_thread():
    """Runs a test with one torch thread: on a busy shared machine several spin against each other."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tokenizer():
    """The character tokenizer of the embedded default (built in milliseconds, read-only in tests)."""
    from pangu_core.tasks.tokenizer import build_tokenizer

    return build_tokenizer()


@pytest.fixture
def own_sandbox_runs(tmp_path, monkeypatch):
    """Asserts that no process and no folder of this test's own sandbox runs outlives them.

    The test's runs put their folders under a folder of its own (tempfile's directory points there)
    and are told from other callers' runs by the marker every run carries (it starts with our pid),
    so another test session using the sandbox on the same machine at the same time cannot make
    this fail, nor be blamed for what that session leaves.
    """
    from pangu_core.rewards.sandbox import sandboxed_processes

    runs = tmp_path / "sandbox-runs"
    runs.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(runs))
    yield runs
    assert sandboxed_processes() == []
    assert sorted(p.name for p in runs.iterdir()) == []


@pytest.fixture(scope="session")
def save_nano():
    """save_nano(folder, **model_kwargs): a randomly initialised nano model with the character
    tokenizer, saved into ``folder`` as a model folder (as `pangu-core sft` writes one); returns it."""
    from pangu_core.tasks.model import tiny_pangu
    from pangu_core.tasks.tokenizer import build_tokenizer

    def save(folder, **model_kwargs):
        tokenizer = build_tokenizer()
        tiny_pangu("nano", tokenizer, **model_kwargs).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        return folder

    return save


@pytest.fixture(scope="module")
def start_folder(tmp_path_factory, save_nano):
    """The start checkpoint of the stage drivers' tests: a nano model folder with 160 positions."""
    return save_nano(tmp_path_factory.mktemp("start"), seed=0, max_position_embeddings=160)
