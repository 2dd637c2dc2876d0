"""Device layer: cpu always, cuda through torch, npu only through an installed torch_npu."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from pangu_core import device


def test_cpu_is_always_available():
    info = device.probe("cpu")
    assert info.available and info.count == 1


def test_absent_accelerators_say_why(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cuda = device.probe("cuda")
    assert not cuda.available and "is_available" in cuda.reason
    monkeypatch.setattr(device, "npu_module_installed", lambda: False)
    npu = device.probe("npu")
    assert not npu.available and "torch_npu is not installed" in npu.reason


def test_auto_falls_back_to_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(device, "npu_module_installed", lambda: False)
    monkeypatch.delenv(device.ENV_VAR, raising=False)
    assert device.select() == torch.device("cpu")
    assert device.select("auto") == torch.device("cpu")


def test_environment_variable_forces_the_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv(device.ENV_VAR, "cpu")
    assert device.select() == torch.device("cpu")
    monkeypatch.setenv(device.ENV_VAR, "cuda")
    with pytest.raises(RuntimeError, match="PANGU_DEVICE: cuda was requested but is not usable"):
        device.select()
    monkeypatch.setenv(device.ENV_VAR, "tpu")
    with pytest.raises(ValueError, match="PANGU_DEVICE: expected 'auto', 'cpu'"):
        device.select()


def test_forced_npu_without_torch_npu_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(device, "npu_module_installed", lambda: False)
    with pytest.raises(RuntimeError, match="device: npu was requested but is not usable: torch_npu is not installed"):
        device.select("npu:0")


def test_bad_specs_are_refused():
    with pytest.raises(ValueError, match="bad device index"):
        device.select("cuda:x")
    with pytest.raises(ValueError, match="bad device index"):
        device.select("cpu:1")
    with pytest.raises(TypeError, match="device: expected a str or torch.device"):
        device.select(3)
    with pytest.raises(ValueError, match="kind: expected one of"):
        device.probe("gpu")


def test_move_places_modules_and_tensors(monkeypatch):
    monkeypatch.delenv(device.ENV_VAR, raising=False)
    layer = device.move(torch.nn.Linear(2, 2), "cpu", dtype=torch.bfloat16)
    assert layer.weight.dtype == torch.bfloat16 and layer.weight.device.type == "cpu"
    assert device.move(torch.zeros(2), "cpu").device.type == "cpu"
    with pytest.raises(TypeError, match="obj: expected a torch.Tensor or torch.nn.Module, got list"):
        device.move([1], "cpu")


def test_probing_never_imports_torch_npu_when_it_is_absent():
    code = (
        "import sys; from pangu_core import device; [device.probe(k) for k in device.KINDS]; "
        "device.select('auto'); print('torch_npu' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
