"""Test configuration: hardware tiers skip cleanly where the hardware is absent."""

from __future__ import annotations

import os

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
        if "cuda" in item.keywords:
            cuda = _cuda_available() if cuda is None else cuda
            if not cuda:
                item.add_marker(pytest.mark.skip(reason="cuda tier: no CUDA device on this machine"))
        if "npu" in item.keywords:
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
