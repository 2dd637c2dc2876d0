"""Ray backend vs the single-host process backend of `pangu-core rl`, on one host, same process count.

Both arms: the built-in quick config (12 steps, G = 4, 4 groups per step, eta = 1, 1 rollout worker,
2 torch threads in all: learner 1 + rollout 1), the same seed and start checkpoint; the evaluation
made small (5 test problems per level, last step only) since only the training loop is compared.
Process arm: learner process + 1 rollout process. Ray arm: learner actor + 1 rollout actor on a
local `ray.init(num_cpus=2)` (the driver only watches). Runs are interleaved (process, ray, ...).
Writes NAME.json (default ray_vs_process.json) next to this file.

    RAY_AUTH_MODE=disabled .venv/bin/python scripts/rl_backends/ray_vs_process.py INIT [REPEATS [NAME]]
"""

import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from pangu_core.rl.config import RLConfig, builtin_config  # noqa: E402
from pangu_core.rl.run import run_rl  # noqa: E402

runs = []


def main():
    global runs
    init = sys.argv[1]
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    base = RLConfig.from_yaml(builtin_config("rl_quick")).replace(test_per_level=5, snapshot_steps=())
    work = Path(tempfile.gettempdir()) / f"rayvp{uuid.uuid4().hex[:8]}"
    for r in range(repeats):
        for backend in ("process", "ray"):
            config = base.replace(backend=backend)
            if backend == "ray":
                import ray

                ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
            started = time.perf_counter()
            report = run_rl(config, work / f"{backend}{r}", init=init, progress=False, plot=False)
            wall = time.perf_counter() - started
            if backend == "ray":
                ray.shutdown()
            row = {"backend": backend, "repeat": r, "groups_per_s": report["throughput"]["groups_per_s"],
                   "tokens_per_s": report["throughput"]["tokens_per_s"], "lag_histogram": report["lag_histogram"],
                   "max_lag_consumed": report["max_lag_consumed"], "ledger_holds": report["ledger_holds"],
                   "reward": report["curves"]["reward"], "idle": report["idle"], "wall_s": wall,
                   "publish_s": report["distributed"].get("publish_s")}
            runs.append(row)
            print(json.dumps({k: row[k] for k in ("backend", "repeat", "groups_per_s", "lag_histogram", "wall_s")}),
                  flush=True)


    def summary(backend):
        rows = [r for r in runs if r["backend"] == backend]
        rates = [r["groups_per_s"] for r in rows]
        rewards = [r["reward"] for r in rows]
        return {"groups_per_s_median": statistics.median(rates), "groups_per_s_runs": rates,
                "mean_reward_per_run": [statistics.fmean(x) for x in rewards]}


    proc, ray_ = summary("process"), summary("ray")
    band = [(min(col), max(col)) for col in zip(*[r["reward"] for r in runs if r["backend"] == "process"])]
    inside = [sum(lo <= v <= hi for v, (lo, hi) in zip(r["reward"], band)) / len(band)
              for r in runs if r["backend"] == "ray"]
    result = {"config": "rl_quick (12 steps, G=4, B=4, eta=1, 1 rollout worker, 2 threads), test_per_level=5",
              "init": init, "machine": "2 CPU cores shared with other jobs", "process": proc, "ray": ray_,
              "ratio_ray_over_process_median": ray_["groups_per_s_median"] / proc["groups_per_s_median"],
              "ray_reward_share_of_steps_inside_process_band": inside,
              "max_lag_consumed": {b: [r["max_lag_consumed"] for r in runs if r["backend"] == b] for b in ("process", "ray")},
              "runs": runs}
    name = sys.argv[3] if len(sys.argv) > 3 else "ray_vs_process"
    (Path(__file__).parent / f"{name}.json").write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=1))


if __name__ == "__main__":
    main()
