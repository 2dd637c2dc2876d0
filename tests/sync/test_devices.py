"""Models on a device publish and pull through host buffers (shm, in-process, torch.distributed).

The CUDA tier runs on a GPU. The CPU tier forces CPU tensors through the same staging path
(``endpoints._stage_cpu_tensors``), so the copies to and from host buffers run everywhere.
"""

from __future__ import annotations

import textwrap
import uuid

import pytest
import torch

from pangu_core.sync import Publisher, Subscriber, SyncConfig, endpoints

DEVICES = ["cpu_staged", pytest.param("cuda", marks=pytest.mark.cuda)]


def _device(name: str, monkeypatch: pytest.MonkeyPatch) -> str:
    if name == "cpu_staged":
        monkeypatch.setattr(endpoints, "_stage_cpu_tensors", True)
        return "cpu"
    return name


def _expected(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().bfloat16().cpu() for k, v in model.state_dict().items()}


def _same(target: torch.nn.Module, expected: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(v.cpu(), expected[k]) for k, v in target.state_dict().items())


# A learner model on the device reaches rollout models on the device and on the CPU with exactly
# its bf16-cast values, in place (parameters keep their storage), version after version.
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("transport", ["inprocess", "shm"])
def test_device_model_parameters_publish_and_pull(transport: str, device: str, monkeypatch) -> None:
    device = _device(device, monkeypatch)
    torch.manual_seed(0)
    model = torch.nn.Linear(97, 33).to(device)
    device_target = torch.nn.Linear(97, 33).to(device, torch.bfloat16)
    cpu_target = torch.nn.Linear(97, 33).bfloat16()
    pointers = [p.data_ptr() for p in device_target.parameters()]
    config = SyncConfig(transport=transport, name="dev" + uuid.uuid4().hex[:8], prefix="pgt" + uuid.uuid4().hex[:8],
                        publish_dtype="bfloat16", timeout_s=20)
    with Publisher(model, config) as publisher:
        subscribers = [Subscriber(device_target, config, address=publisher.address),
                       Subscriber(cpu_target, config, address=publisher.address)]
        for version in range(2):
            assert publisher.publish() == version
            for subscriber, target in zip(subscribers, (device_target, cpu_target)):
                assert subscriber.pull() == version
                assert _same(target, _expected(model)), (transport, version)
            with torch.no_grad():
                model.weight.mul_(-0.5).add_(1.0)
        for subscriber in subscribers:
            subscriber.close()
    assert [p.data_ptr() for p in device_target.parameters()] == pointers


RANK = textwrap.dedent("""
    import sys, torch, torch.distributed as dist
    from pangu_core.sync import Publisher, Subscriber, SyncConfig, endpoints
    rank, port, backend, device = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    if device == "cuda":
        device = torch.device("cuda", rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    else:
        device = "cpu"
        endpoints._stage_cpu_tensors = True
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    config = SyncConfig(transport="torch_distributed", bucket_mb=0.01, publish_dtype="bfloat16")
    torch.manual_seed(0)
    model = torch.nn.Linear(200, 33).to(device)   # the same values on both ranks (same seed)
    if rank == 0:
        publisher = Publisher(model, config)
        assert publisher.publish() == 0
        with torch.no_grad():
            model.weight.add_(1.0)
        assert publisher.publish() == 1
    else:
        target = torch.nn.Linear(200, 33).to(device, torch.bfloat16)
        subscriber = Subscriber(target, config)
        for version in range(2):
            assert subscriber.pull() == version
            for name, value in target.state_dict().items():
                if not torch.equal(value, model.state_dict()[name].bfloat16()):
                    raise SystemExit(f"version {version}: {name} differs from the learner's")
            with torch.no_grad():
                model.weight.add_(1.0)   # what the learner does next
    dist.barrier()
    dist.destroy_process_group()
    print("OK", flush=True)
""")


# Two local processes sync a model through torch.distributed. Over gloo they share the one GPU
# (tensors staged through host buffers); NCCL refuses two ranks on one GPU, so it needs two.
@pytest.mark.parametrize("backend, device", [
    ("gloo", "cpu_staged"),
    pytest.param("gloo", "cuda", marks=pytest.mark.cuda),
    pytest.param("nccl", "cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(
        torch.cuda.device_count() < 2, reason="NCCL needs one GPU per rank")]),
])
def test_device_model_over_torch_distributed(tmp_path, run_ranks, free_port, backend: str, device: str) -> None:
    script = tmp_path / "rank.py"
    script.write_text(RANK)
    port = str(free_port)
    assert run_ranks(script, [[str(rank), port, backend, device] for rank in range(2)], timeout=180) == []
