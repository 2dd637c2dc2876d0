"""`pangu-core rl --backend torchrun` started by torchrun on one machine (gloo): three ranks in
lockstep (rank 0 learns, ranks 1 and 2 roll out one-step-off), and two ranks with a relay on the
rollout rank feeding a rollout process through the rank's shared memory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pangu_core.rl.config import RLConfig, builtin_config
from pangu_core.rl.run import run_rl


def tiny(relays: bool, prompts_per_claim: int) -> RLConfig:
    """The quick config made tiny (levels 1-2, 2 groups of 2 per step, 16-token answers), torchrun."""
    config = RLConfig.from_yaml(builtin_config("rl_quick"))
    return config.replace(
        backend="torchrun", steps=4, checkpoint_every=2, snapshot_steps=(), train_prompts=40, test_per_level=3,
        levels=(1, 2), num_threads=3,
        schedule=config.schedule.replace(eta=1, max_new_tokens=16, group_size=2, batch_groups=2,
                                         prompts_per_claim=prompts_per_claim, poll_s=0.05),
        eval=config.eval.replace(max_new_tokens=16), placement=config.placement.replace(torchrun_relays=relays))


def torchrun(ranks: int, config: RLConfig, init: Path, tmp_path: Path) -> tuple[dict, list[dict]]:
    """Runs `torchrun --standalone --nproc-per-node ranks -m pangu_core.cli rl ...`: (report, rank summaries)."""
    path = tmp_path / "config.yaml"
    config.to_yaml(path)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks),
               "-m", "pangu_core.cli", "rl", "--config", str(path), "--init", str(init), "--out", str(out),
               "--no-progress"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    decoder, text, summaries = json.JSONDecoder(), done.stdout, []
    position = 0
    while (start := text.find("{", position)) >= 0:
        value, position = decoder.raw_decode(text, start)
        summaries.append(value)
    return json.loads((out / "report.json").read_text()), [s for s in summaries if "rank" in s]


def check_run(report: dict, config: RLConfig) -> None:
    assert report["backend"] == "torchrun"
    assert report["max_lag_consumed"] <= config.schedule.eta
    queue = report["queue"]
    assert queue["put"] == queue["got"] + queue["evicted"] + queue["dropped"] + queue["size"]
    assert queue["submitted"] == queue["put"] + queue["rejected"]
    assert queue["got"] == config.steps * config.schedule.batch_groups
    assert report["curves"]["step"] == list(range(1, config.steps + 1))
    assert [a["step"] for a in report["accuracy"]] == [config.steps]      # the last step is always evaluated
    assert list(Path("/dev/shm").glob(f"{report['distributed']['prefix']}*")) == []


def report_workers(tmp_path: Path) -> list[dict]:
    from pangu_core.distill.training_state import load_training_state

    state = load_training_state(tmp_path / "out" / "checkpoint" / "learner_state.safetensors")
    return state["segments"][-1]["workers"]


# Rank 0 learns; ranks 1 and 2 each generate one prompt of every batch, in lockstep rounds. Every
# version the ranks need reaches them once (one broadcast per version), and each rank's groups are
# consumed exactly as the single-host backend would.
def test_three_ranks_in_lockstep(init, tmp_path):
    config = tiny(relays=False, prompts_per_claim=1)
    report, ranks = torchrun(3, config, init, tmp_path)
    check_run(report, config)
    network = report["distributed"]
    assert network["mode"] == "lockstep"
    assert network["syncs"] == len(network["bytes_per_version"]) >= 2
    assert all(v == network["nbytes"] for v in network["bytes_per_version"].values())
    assert sorted(r["rank"] for r in ranks) == [1, 2] and all(r["mode"] == "lockstep" for r in ranks)
    assert sorted(w["name"] for w in report_workers(tmp_path)) == ["rank-1", "rank-2"]


# Rank 1 runs a relay and one rollout process that pulls from the relay's shared memory at its own
# pace: the relay received each published version exactly once, and any eta works (here 1).
def test_two_ranks_with_a_relay(init, tmp_path):
    config = tiny(relays=True, prompts_per_claim=2)
    report, ranks = torchrun(2, config, init, tmp_path)
    check_run(report, config)
    network = report["distributed"]
    assert network["mode"] == "relay" and len(network["relays"]) == 1
    relay = network["relays"][0]
    assert relay["error"] is None and relay["versions"] == config.steps + 1
    assert {str(k): v for k, v in relay["bytes_per_version"].items()} == network["bytes_per_version"]
    assert [r["rank"] for r in ranks] == [1] and ranks[0]["workers"][0]["outcome"] == "done"


def test_torchrun_backend_needs_torchrun(init, tmp_path, monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match="backend 'torchrun': start the command with torchrun"):
        run_rl(tiny(relays=False, prompts_per_claim=1), tmp_path / "out", init=init, progress=False)
