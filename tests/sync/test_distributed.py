"""torch.distributed transport with local gloo processes: exact bucketed broadcast, changed-only
sends, clock-gated transfers (bytes move only when some rank needs a fresher version)."""

from __future__ import annotations

import textwrap

import pytest
import torch

from pangu_core.sync import Publisher, Subscriber, SyncConfig

RANK = textwrap.dedent("""
    import sys, torch, torch.distributed as dist
    from pangu_core.sync import Publisher, Subscriber, SyncConfig
    rank, world, port = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    config = SyncConfig(transport="torch_distributed", bucket_mb=0.01, changed_only=True, publish_dtype="bfloat16")
    shapes = {"embed": (97, 33), "layer0.q": (64, 64), "layer0.bias": (64,), "layer1.q": (64, 64),
              "layer1.bias": (64,), "norm": (33,), "head": (33, 101)}

    def state(version):
        g = torch.Generator().manual_seed(1234)
        out = {k: torch.randn(s, generator=g) for k, s in shapes.items()}
        if version >= 1:
            out["layer1.q"] += version  # later versions change one tensor only
        return out

    def check(target, version, what):
        for k, v in state(version).items():
            if not torch.equal(target[k], v.bfloat16()):
                raise SystemExit(f"rank {rank}: {what}: {k} differs from version {version}")

    if rank == 0:
        model = state(0)
        pub = Publisher(model, config)
        assert pub.publish() == 0
        model.update(state(1)); assert pub.publish() == 1
        model.update(state(2)); assert pub.publish() == 2   # nobody needs it: no bytes move
        model.update(state(3)); assert pub.publish() == 3
        model.update(state(4)); assert pub.publish() == 4   # one rank needs it: all receive it
    else:
        try:
            Publisher(state(0), config)
            raise SystemExit("a Publisher on a non-source rank was accepted")
        except ValueError as e:
            assert "src_rank" in str(e)
        target = {k: torch.zeros(s, dtype=torch.bfloat16) for k, s in shapes.items()}
        sub = Subscriber(target, config)
        assert sub.pull() == 0; check(target, 0, "first pull")
        target["embed"].fill_(7.0)   # a local mark in a bucket that version 1 does not change
        assert sub.pull() == 1
        if not bool(torch.all(target["embed"] == 7.0)):
            raise SystemExit("changed_only rewrote an unchanged bucket")
        target["embed"].copy_(state(1)["embed"].bfloat16()); check(target, 1, "changed-only pull")
        assert sub.pull(min_version=1) == 1; check(target, 1, "gated pull")  # fresh enough: no transfer
        assert sub.pull(min_version=3) == 3; check(target, 3, "needed pull")
        got = sub.pull(min_version=4 if rank == 1 else 0)
        assert got == 4, got; check(target, 4, "pull needed by another rank")
    # Second channel: bf16 source, no cast, every bucket sent: one-tensor buckets travel straight
    # from the learner's tensors into the rollout parameters, small ones through the flat buffer.
    plain = SyncConfig(transport="torch_distributed", bucket_mb=0.01, publish_dtype=None)
    if rank == 0:
        model = {k: v.bfloat16() for k, v in state(5).items()}
        pub2 = Publisher(model, plain)
        assert pub2.publish() == 0
        model["embed"].add_(1.0)
        assert pub2.publish() == 1
    else:
        target = {k: torch.zeros(s, dtype=torch.bfloat16) for k, s in shapes.items()}
        sub2 = Subscriber(target, plain)
        assert sub2.pull() == 0; check(target, 5, "in-place pull")
        assert sub2.pull() == 1
        if not torch.equal(target["embed"], state(5)["embed"].bfloat16() + 1.0):
            raise SystemExit(f"rank {rank}: second in-place pull is wrong")
    dist.barrier()
    dist.destroy_process_group()
    print("OK", flush=True)
""")


def test_gloo_broadcast_with_three_ranks(tmp_path, run_ranks, free_port) -> None:
    # Every rollout rank ends each pull with exactly the learner's published bf16 weights; only
    # changed buckets travel with changed_only; a rank that holds a fresh enough version moves no
    # bytes unless another rank needs newer ones (then all receive them, collectively).
    script = tmp_path / "rank.py"
    script.write_text(RANK)
    port, world = free_port, 3
    assert run_ranks(script, [[str(r), str(world), str(port)] for r in range(world)], timeout=120) == []


def test_distributed_transport_needs_a_process_group() -> None:
    config = SyncConfig(transport="torch_distributed")
    with pytest.raises(RuntimeError, match="init_process_group first"):
        Publisher({"w": torch.zeros(3)}, config)
    with pytest.raises(RuntimeError, match="init_process_group first"):
        Subscriber({"w": torch.zeros(3, dtype=torch.bfloat16)}, config)


def test_gloo_buckets_go_to_the_least_loaded_group() -> None:
    from types import SimpleNamespace

    from pangu_core.sync.distributed import _Buckets

    # Both 32-unit buckets (first and last) must land on different groups; every rank computes
    # the same assignment from the bucket sizes alone.
    fake = SimpleNamespace(groups=[None, "second"], sizes=[32, 3, 2, 5, 5, 5, 3, 4, 32])
    lanes = _Buckets._lanes(fake, list(range(9)))
    assert lanes[0] != lanes[8]
    loads = [sum(fake.sizes[b] for b, lane in zip(range(9), lanes) if lane == g) for g in (0, 1)]
    assert abs(loads[0] - loads[1]) <= 32
    assert _Buckets._lanes(fake, [1, 4]) == [0, 1]
