"""Device layer, CUDA tier: selecting CUDA and moving modules and tensors there (skipped without CUDA)."""

from __future__ import annotations

import pytest
import torch

from pangu_core import device

pytestmark = pytest.mark.cuda


def test_select_cuda(monkeypatch):
    monkeypatch.delenv(device.ENV_VAR, raising=False)
    assert device.select("cuda") == torch.device("cuda", 0)
    assert device.select("cuda:0") == torch.device("cuda", 0)
    assert device.probe("cuda").available and device.probe("cuda").count == torch.cuda.device_count()
    with pytest.raises(RuntimeError, match=f"cuda:{torch.cuda.device_count()} requested but only"):
        device.select(f"cuda:{torch.cuda.device_count()}")


def test_auto_prefers_cuda_without_npu(monkeypatch):
    monkeypatch.delenv(device.ENV_VAR, raising=False)
    monkeypatch.setattr(device, "npu_module_installed", lambda: False)
    assert device.select("auto").type == "cuda"


def test_move_module_and_tensor_with_dtype():
    # Invariant: move() puts every parameter on the chosen device in the asked dtype, and the module
    # still computes the same function (up to bfloat16 rounding).
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 4))
    x = torch.randn(5, 16)
    expected = model(x)
    dev = device.select("cuda")
    moved = device.move(model, dev, dtype=torch.bfloat16)
    assert all(p.device == dev and p.dtype == torch.bfloat16 for p in moved.parameters())
    out = moved(device.move(x, dev, dtype=torch.bfloat16))
    assert out.device == dev and out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float().cpu(), expected, atol=5e-2, rtol=5e-2)
    back = device.move(moved, "cpu", dtype=torch.float32)
    assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in back.parameters())
