"""Relay figures on one host: 3 gloo ranks (rank 0 = learner, ranks 1, 2 = simulated nodes).

The learner publishes VERSIONS versions of a real model's weights (the --init checkpoint, float32)
with a 0.2 s pause between them (a stand-in learner step). Cases:
  eager:   each node's relay has one rollout reader pulling every version at once;
  slow:    node 1 eager, node 2 has a reader that sleeps 1 s between pulls and one that never pulls;
  direct:  no relay: ranks 1, 2 are rollout readers in the collective themselves (torch_distributed
           Subscriber), node 2 sleeping 1 s between pulls: the learner's publish waits for it.
Reports the learner's publish seconds (median, max) and the bytes each node received per version.

    .venv/bin/python scripts/rl_backends/relay_measure.py INIT   (writes relay_measure.json next to this file)
"""

import json
import socket
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

RANK = r'''
import json, sys, time, torch, torch.distributed as dist
from transformers import AutoModelForCausalLM
from pangu_core.sync import Publisher, Relay, RelaySource, Subscriber, SyncConfig
rank, port, case, init, prefix, versions = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6])
torch.set_num_threads(1)
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=3)
side = dist.new_group(backend="gloo")
net = SyncConfig(transport="torch_distributed", name="policy", publish_dtype=None)
model = AutoModelForCausalLM.from_pretrained(init, dtype=torch.float32)
slow = rank == 2 and case in ("slow", "direct")
if rank == 0:
    out = RelaySource(model, net) if case != "direct" else Publisher(model, net)
    times = []
    for v in range(versions):
        with torch.no_grad():
            next(model.parameters()).add_(1e-3)
        t = time.perf_counter(); out.publish(version=v); times.append(time.perf_counter() - t)
        time.sleep(0.2)
    dist.barrier(group=side)
    sent = dict(getattr(out, "bytes_per_version", {}))
    if case != "direct":
        out.close()
    boxes = [None] * 3
    dist.gather_object(None, boxes, dst=0, group=side)
    print(json.dumps({"publish_s": times, "nbytes": out.nbytes, "sent_per_version": sent, "nodes": boxes[1:]}))
else:
    target = {k: torch.empty_like(v) for k, v in model.state_dict().items()}
    if case == "direct":
        sub = Subscriber(target, net)
        for v in range(versions):
            sub.pull(min_version=v)
            if slow:
                time.sleep(1.0)
        dist.barrier(group=side)
        dist.gather_object({"bytes_received": sub.bytes_transferred}, None, dst=0, group=side)
    else:
        local = SyncConfig(transport="shm", name="policy", prefix=f"{prefix}n{rank}", timeout_s=60)
        relay = Relay(net, local).start()
        relay.wait_first(120)
        reader = Subscriber(target, local, address=relay.address)
        idle = Subscriber({k: torch.empty_like(v) for k, v in target.items()}, local, address=relay.address) if slow else None
        got = -1
        while got < versions - 1:
            got = reader.pull(min_version=got + 1, timeout_s=120)
            if slow:
                time.sleep(1.0)
        dist.barrier(group=side)
        relay.join(60)
        stats = relay.stats()
        dist.gather_object({k: stats[k] for k in ("versions", "bytes_per_version", "bytes_received", "error")},
                           None, dst=0, group=side)
        reader.close()
        if idle is not None:
            idle.close()
dist.destroy_process_group()
'''


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    init, versions = sys.argv[1], 10
    script = Path(tempfile.gettempdir()) / f"relay_measure_{uuid.uuid4().hex[:8]}.py"
    script.write_text(RANK)
    results = {}
    for case in ("eager", "slow", "direct", "eager", "slow", "direct"):
        port, prefix = free_port(), f"rm{uuid.uuid4().hex[:8]}"
        procs = [subprocess.Popen([sys.executable, str(script), str(r), str(port), case, init, prefix, str(versions)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(3)]
        outs = [p.communicate(timeout=600) for p in procs]
        if any(p.returncode for p in procs):
            raise SystemExit("\n".join(o[1][-3000:] for o in outs))
        data = json.loads(outs[0][0].strip().splitlines()[-1])
        times = data["publish_s"][1:]      # version 0 waits for the readers to start
        row = {"publish_s_median": statistics.median(times), "publish_s_max": max(times), "nbytes": data["nbytes"],
               "bytes_per_version_per_node": [sorted(set((n.get("bytes_per_version") or {"all": n["bytes_received"] / versions}).values()))
                                              for n in data["nodes"]],
               "versions_per_node": [n.get("versions", versions) for n in data["nodes"]]}
        results.setdefault(case, []).append(row)
        print(case, json.dumps(row), flush=True)
    out = {"versions": versions, "pause_between_publishes_s": 0.2, "init": init,
           "machine": "one host, 2 CPU cores shared with other jobs; 3 gloo ranks on 127.0.0.1", "cases": results}
    (Path(__file__).parent / "relay_measure.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
