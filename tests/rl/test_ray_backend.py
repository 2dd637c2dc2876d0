"""`pangu-core rl --backend ray` on one machine: a local Ray with learner, two rollout actors and a
reward actor (one rollout actor dies holding a claim and is restarted), a learner killed mid-run
then resumed, and a two-node ``ray.cluster_utils.Cluster`` whose weights cross the node boundary
over gloo through a relay."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import pytest

from pangu_core.rl.config import RLConfig, builtin_config
from pangu_core.rl.run import STATE_FILE, run_rl

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def no_auth():
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAY_AUTH_MODE", "disabled")
        yield


@pytest.fixture(scope="module")
def local_ray(no_auth):
    """A fresh local Ray of 2 CPUs (never one another test run started)."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, namespace=f"t{uuid.uuid4().hex[:8]}")
    yield
    ray.shutdown()


def tiny(steps: int = 4, workers: int = 2, **placement) -> RLConfig:
    """The quick config made tiny (levels 1-2, 2 groups of 2 per step, 16-token answers) on Ray."""
    config = RLConfig.from_yaml(builtin_config("rl_quick"))
    p = config.placement
    fractions = dict(learner=p.learner.replace(cpus=0.5), rollout=p.rollout.replace(cpus=0.5),
                     reward=p.reward.replace(cpus=0.25))
    return config.replace(
        backend="ray", steps=steps, checkpoint_every=2, snapshot_steps=(), train_prompts=40, test_per_level=3,
        levels=(1, 2), rollout_workers=workers, num_threads=workers + 1,
        schedule=config.schedule.replace(eta=1, max_new_tokens=16, group_size=2, batch_groups=2, prompts_per_claim=1,
                                         poll_s=0.05),
        eval=config.eval.replace(max_new_tokens=16), placement=p.replace(**{**fractions, **placement}))


def leftovers(prefix: str) -> list[str]:
    return [p.name for p in Path("/dev/shm").glob(f"{prefix}*")]


def check_run(report: dict, config: RLConfig, start: int = 0) -> None:
    """The single-host backend's invariants: lags within eta, the ledger, every step's batch (from
    ``start``, where a resumed run's last segment began) consumed once."""
    assert report["backend"] == "ray"
    assert report["max_lag_consumed"] <= config.schedule.eta
    queue = report["queue"]
    assert queue["put"] == queue["got"] + queue["evicted"] + queue["dropped"] + queue["size"]
    assert queue["submitted"] == queue["put"] + queue["rejected"]
    assert queue["got"] == (config.steps - start) * config.schedule.batch_groups
    assert sum(report["levels_consumed"].values()) == queue["got"]
    assert report["curves"]["step"] == list(range(1, config.steps + 1))
    assert [a["step"] for a in report["accuracy"]] == [config.steps]      # the last step is always evaluated


def in_thread(target, *args, **kwargs) -> tuple[threading.Thread, dict]:
    """Runs ``target`` in a thread; the dict receives its result or its error."""
    box: dict = {}

    def work() -> None:
        try:
            box["result"] = target(*args, **kwargs)
        except BaseException as error:   # handed to the test
            box["error"] = error

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread, box


def actor(name: str, timeout_s: float = 120.0):
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return ray.get_actor(name)
        except ValueError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


# Learner, two rollout actors and a reward actor on a local Ray of 2 CPUs. Rollout actor 0 dies
# right after it is granted a claim: Ray restarts it, its claim's group is counted lost and its
# prompt served again, and the run ends with every step's batch consumed once and the ledger whole.
def test_ray_run_with_a_reward_actor_survives_a_dead_rollout_actor(init, local_ray, tmp_path):
    config, prefix = tiny(reward_workers=1), f"t{uuid.uuid4().hex[:10]}"
    thread, box = in_thread(run_rl, config, tmp_path / "out", init=init, progress=False, shm_prefix=prefix,
                            plot=False)
    ray.get(actor(f"{prefix}-rollout-0").fault_after_next_claim.remote())
    thread.join(300)
    assert "error" not in box, box.get("error")
    report = box["result"]
    check_run(report, config)
    assert report["dead_workers"] == ["rollout-0"]
    assert report["distributed"]["deaths"] == {"rollout-0": 1}
    assert report["lost_groups"] == config.schedule.prompts_per_claim     # the one claim it held
    assert report["distributed"]["late_groups"] == 0
    assert leftovers(prefix) == []


# The learner actor is killed after its step-2 checkpoint: the run fails naming it, no shared
# memory is left, and the same call resumes from the checkpoint to the end.
def test_killed_learner_leaves_a_resumable_checkpoint(init, local_ray, tmp_path):
    config, prefix = tiny(steps=4, workers=1), f"t{uuid.uuid4().hex[:10]}"
    out = tmp_path / "out"
    thread, box = in_thread(run_rl, config, out, init=init, progress=False, shm_prefix=prefix, plot=False)
    learner = actor(f"{prefix}-learner")
    deadline = time.monotonic() + 240
    while ray.get(learner.progress.remote())["done"] < 2:
        assert time.monotonic() < deadline and thread.is_alive(), box
        time.sleep(0.05)
    ray.kill(learner)
    thread.join(120)
    assert isinstance(box.get("error"), RuntimeError), box
    assert "learner actor died" in str(box["error"]) and "resume" in str(box["error"])
    assert leftovers(prefix) == []
    from pangu_core.distill.training_state import load_training_state

    start = load_training_state(out / "checkpoint" / STATE_FILE)["step"]
    assert start >= 2
    report = run_rl(config, out, init=init, progress=False, shm_prefix=prefix, plot=False)
    check_run(report, config, start)
    assert leftovers(prefix) == []


def test_ray_backend_errors(init, tmp_path):
    with pytest.raises(ValueError, match="on_step: not available with backend 'ray'"):
        run_rl(tiny(), tmp_path / "out", init=init, on_step=lambda step, record: None)


# Two Ray nodes of one CPU each; custom resources put the learner and one rollout actor on the head
# node and the other rollout actor on the second node. The second node's relay receives every
# version over gloo exactly once, and its rollout actor pulls from the relay's shared memory.
def test_two_node_cluster_weights_cross_through_a_relay(init, no_auth, tmp_path):
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "resources": {"head": 1, "slot": 1},
                                                            "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1, resources={"slot": 1})
        ray.init(address=cluster.address, namespace=f"t{uuid.uuid4().hex[:8]}")
        base = tiny(steps=3)
        p = base.placement
        config = base.replace(placement=p.replace(learner=p.learner.replace(resources=(("head", 1.0),)),
                                                  rollout=p.rollout.replace(resources=(("slot", 1.0),))))
        prefix = f"t{uuid.uuid4().hex[:10]}"
        report = run_rl(config, tmp_path / "out", init=init, progress=False, shm_prefix=prefix, plot=False)
        check_run(report, config)
        network = report["distributed"]
        assert network["relays_in_world"] == 1 and len(network["relays"]) == 1
        relay = network["relays"][0]
        sent = network["bytes_per_version"]
        assert sorted(int(v) for v in sent) == list(range(config.steps + 1))     # versions 0..steps
        assert relay["error"] is None and relay["versions"] == config.steps + 1
        # One network copy per node per version: the relay received exactly what the learner sent.
        assert {str(k): v for k, v in relay["bytes_per_version"].items()} == {str(k): v for k, v in sent.items()}
        assert all(0 < v <= network["nbytes"] for v in sent.values())
        assert len(network["network_publish_s"]) == config.steps + 1
        assert leftovers(prefix) == []
    finally:
        ray.shutdown()
        cluster.shutdown()
