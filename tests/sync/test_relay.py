"""Per-node relays over local gloo ranks: one network copy per node per version, exact weights on the
node's shared memory, readers that lag or never pull do not hold up the learner, nothing left in
/dev/shm after the source closes."""

from __future__ import annotations

import textwrap
import uuid
from pathlib import Path

import pytest
import torch

from pangu_core.sync import Relay, RelaySource, SyncConfig

RANK = textwrap.dedent("""
    import sys, time, torch, torch.distributed as dist
    from pangu_core import PeerLost
    from pangu_core.sync import Relay, RelaySource, Subscriber, SyncConfig, list_segments
    rank, world, port, prefix = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    side = dist.new_group(backend="gloo")        # the test's own sync points, apart from the relay's
    net = SyncConfig(transport="torch_distributed", bucket_mb=0.01, publish_dtype="bfloat16")
    shapes = {"embed": (97, 33), "q": (64, 64), "bias": (64,), "head": (33, 101)}
    VERSIONS = 6

    def state(version):
        g = torch.Generator().manual_seed(1000 + version)
        out = {k: torch.randn(s, generator=g) for k, s in shapes.items()}
        out["step"] = torch.tensor([version])            # a non-float tensor travels uncast
        return out

    if rank == 0:
        try:
            Relay(net, SyncConfig(transport="shm", prefix=prefix))
            raise SystemExit("a Relay on the source rank was accepted")
        except ValueError as e:
            assert "src_rank" in str(e), e
        model = state(0)
        source = RelaySource(model, net)
        for v in range(VERSIONS):
            model.update(state(v))
            assert source.publish(version=v) == v        # readers behind the relays never take part
        assert len(source.publish_s) == VERSIONS and source.latest_version == VERSIONS - 1
        sent = source.bytes_per_version
        assert sorted(sent) == list(range(VERSIONS)) and len(set(sent.values())) == 1, sent
        assert 0 < sent[0] <= source.nbytes and source.bytes_transferred == VERSIONS * sent[0]
        dist.broadcast_object_list([sent], src=0, group=side)
        dist.barrier(group=side)                         # the readers have seen the last version
        source.close()
    else:
        local = SyncConfig(transport="shm", name="policy", prefix=f"{prefix}n{rank}", timeout_s=30)
        relay = Relay(net, local).start()
        assert relay.wait_first(60) >= 0
        assert list_segments(f"{prefix}n{rank}") == [relay.address]
        target = lambda: {**{k: torch.zeros(s, dtype=torch.bfloat16) for k, s in shapes.items()},
                          "step": torch.tensor([-1])}
        box = [None]
        dist.broadcast_object_list(box, src=0, group=side)
        sent = box[0]
        idle = Subscriber(target(), local, address=relay.address)      # never pulls
        mine = target()
        reader = Subscriber(mine, local, address=relay.address)       # a slow rollout process
        got = -1
        while got < VERSIONS - 1:
            got = reader.pull(min_version=got + 1, timeout_s=30)
            for k, v in state(got).items():
                expected = v if k == "step" else v.bfloat16()
                if not torch.equal(mine[k], expected):
                    raise SystemExit(f"rank {rank}: {k} differs from version {got}")
            time.sleep(0.05)
        dist.barrier(group=side)
        relay.join(60)
        stats = relay.stats()
        assert stats["error"] is None, stats["error"]
        # One network copy per node per version, whatever the node's readers do.
        assert stats["versions"] == VERSIONS, stats
        assert stats["bytes_per_version"] == sent, (stats, sent)
        assert list_segments(f"{prefix}n{rank}") == []                 # STOP closed the node's segment
        try:
            reader.pull(min_version=VERSIONS)
            raise SystemExit("a pull after the relay closed did not raise PeerLost")
        except PeerLost:
            pass
        idle.close(); reader.close()
    dist.barrier(group=side)
    dist.destroy_process_group()
    print("OK", flush=True)
""")


def test_relays_on_three_gloo_ranks(tmp_path: Path, run_ranks, free_port) -> None:
    script = tmp_path / "rank.py"
    script.write_text(RANK)
    prefix, world = f"rl{uuid.uuid4().hex[:10]}", 3
    assert run_ranks(script, [[str(r), str(world), str(free_port), prefix] for r in range(world)], timeout=180) == []
    assert list(Path("/dev/shm").glob(f"{prefix}*")) == []


def test_relay_errors_name_the_argument() -> None:
    net = SyncConfig(transport="torch_distributed")
    shm = SyncConfig(transport="shm")
    with pytest.raises(ValueError, match="config.transport: expected 'torch_distributed'"):
        RelaySource({"w": torch.zeros(3)}, shm)
    with pytest.raises(ValueError, match="config.changed_only: expected False"):
        Relay(net.replace(changed_only=True), shm)
    with pytest.raises(TypeError, match="local: expected a SyncConfig"):
        Relay(net, {"transport": "shm"})
    with pytest.raises(ValueError, match="local.transport: expected a node-local transport"):
        Relay(net, net)
    with pytest.raises(RuntimeError, match="init_process_group first"):
        RelaySource({"w": torch.zeros(3)}, net)
    with pytest.raises(RuntimeError, match="init_process_group first"):
        Relay(net, shm)
