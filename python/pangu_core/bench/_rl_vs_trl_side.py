"""One side of `pangu-core bench rl_vs_trl` in its own process: `pangu-core rl` (ours) or TRL's GRPOTrainer.

Each run is a child process (``python -m pangu_core.bench._rl_vs_trl_side SPEC RESULT``), so that
torch's thread count, the global RNG and TRL's patches of the model never leak from one run into the
next. SPEC is a JSON file ``{"side": "ours" | "trl", "config": RLConfig.to_dict(), "init": folder,
"out": folder}`` (a "trl" side may add ``"torch_threads": n`` to run at n threads instead of the
config's num_threads); the child writes RESULT (JSON): groups/s in steady state, the reward curve
against step and wall time, and the greedy test accuracy of the final model. ``{"side": "sft",
"out": folder}`` trains the start checkpoint instead (`pangu-core sft --quick`).

:func:`trl_arguments` maps an :class:`~pangu_core.rl.config.RLConfig` to the keyword arguments of
TRL's ``GRPOConfig`` (a plain dict, so the mapping is testable without TRL); :func:`trl_differences`
lists what cannot be made equal.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from pangu_core.rl.config import RLConfig

SIDES = ("ours", "trl", "sft")
# TRL's loss_type whose aggregation is our token mean: sum of per-token losses over the response
# tokens of the whole (accumulated) batch divided by their number. With one process and no gradient
# accumulation "bnpo" (local batch) is the same number; "grpo" averages per sequence first.
TRL_TOKEN_MEAN_LOSS = "dapo"
_ADVANTAGE_SCALES = {"group": "group", "batch": "batch", "none": "none"}


def trl_version() -> str | None:
    """The installed TRL's version, or None when TRL cannot be imported."""
    try:
        import trl
    except Exception:  # noqa: BLE001 - any import failure means "no TRL here"
        return None
    return str(trl.__version__)


def trl_arguments(config: RLConfig, output_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Keyword arguments of ``trl.GRPOConfig`` that run the same algorithm as ``config`` does.

    Equal: group size (num_generations), completions per step (group_size x batch_groups, one
    generation per optimiser step, no gradient accumulation), learning rate (constant, no warm-up),
    AdamW betas / epsilon / weight decay, gradient-norm clip, sampling temperature with top-k, top-p
    and min-p off, generation length, ratio clip (epsilon, epsilon_high), dual clip (delta), KL
    coefficient (beta), group-std advantages, token-mean loss, one optimiser step per batch
    (num_iterations 1), steps, seed and prompt order (no shuffling). CPU, float32, no vLLM, no
    gradient checkpointing, no saving, no logging integrations.
    """
    if not isinstance(config, RLConfig):
        raise TypeError(f"config: expected RLConfig, got {type(config).__name__}")
    schedule, loss = config.schedule, config.grpo
    if loss.advantage_scale not in _ADVANTAGE_SCALES:
        raise ValueError(f"config: grpo.advantage_scale {loss.advantage_scale!r} has no TRL counterpart")
    return {
        "output_dir": str(output_dir),
        # The run: steps, batch, prompt order, seed.
        "max_steps": config.steps,
        "num_generations": schedule.group_size,
        "per_device_train_batch_size": schedule.group_size * schedule.batch_groups,
        "gradient_accumulation_steps": 1,
        "steps_per_generation": 1,
        "num_iterations": 1,
        "shuffle_dataset": False,
        "seed": config.seed,
        # Sampling.
        "temperature": schedule.temperature,
        "max_completion_length": schedule.max_new_tokens,
        "top_k": 0,
        "top_p": 1.0,
        "min_p": None,
        "repetition_penalty": 1.0,
        "mask_truncated_completions": False,
        # The loss.
        "beta": loss.kl_coef,
        "epsilon": loss.clip_low,
        "epsilon_high": loss.clip_high,
        "delta": loss.dual_clip,
        "loss_type": TRL_TOKEN_MEAN_LOSS,
        "scale_rewards": _ADVANTAGE_SCALES[loss.advantage_scale],
        "importance_sampling_level": "token",
        # The optimiser and its schedule.
        "learning_rate": config.learning_rate,
        "lr_scheduler_type": "constant",
        "warmup_steps": 0,
        "optim": "adamw_torch",
        "adam_beta1": config.betas[0],
        "adam_beta2": config.betas[1],
        "adam_epsilon": 1e-8,           # torch.optim.AdamW's default, which ours uses
        "weight_decay": config.weight_decay,
        "max_grad_norm": 0.0 if config.max_grad_norm is None else config.max_grad_norm,   # 0: not clipped
        # Machine and housekeeping: CPU, float32, nothing saved, nothing reported.
        "use_cpu": True,
        "bf16": False,
        "fp16": False,
        "gradient_checkpointing": False,
        "use_vllm": False,
        "report_to": "none",
        "save_strategy": "no",
        "eval_strategy": "no",
        "logging_steps": 1,
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        "remove_unused_columns": False,
        "log_completions": False,
    }


def trl_differences(config: RLConfig) -> list[str]:
    """What differs between the two systems for ``config`` (recorded in each case)."""
    out = [
        "TRL is synchronous: it generates a batch with its torch threads, then trains on it with the same "
        "threads (one process); ours runs rollout worker and learner as processes with their own threads "
        f"({config.rollout_workers} x {config.rollout_threads} + {config.learner_threads}).",
        "advantage eps: TRL adds 1e-4 to the group std, ours "
        f"{config.grpo.advantage_eps:g} (no effect on zero-spread groups, a relative 1e-4 otherwise)",
        "ours also takes the behaviour log-probs with one forward pass after sampling (for the off-policy "
        "correction); TRL skips it with num_iterations = 1 and computes token entropies in its loss pass instead",
    ]
    if config.grpo.correction != "none":
        out.append(f"off-policy correction: ours {config.grpo.correction!r} (weight pi_prox / pi_behav; ~1 "
                   "on policy, so eta = 0 equals TRL's on-policy loss), TRL none outside vLLM")
    if config.weight_decay:
        out.append("weight decay: the Trainer leaves biases and norm weights undecayed, ours decays all")
    return out


def make_grpo_config(config: RLConfig, output_dir: str | os.PathLike[str]):
    """``trl.GRPOConfig`` from :func:`trl_arguments`, checked after TRL resolved its derived values.

    transformers 5 renamed ``gradient_checkpointing`` to ``activation_checkpointing`` (the old name
    still works, with a warning); the new name is used where it exists.
    """
    import dataclasses

    import trl

    arguments = trl_arguments(config, output_dir)
    names = {f.name for f in dataclasses.fields(trl.GRPOConfig)}
    if "activation_checkpointing" in names:
        arguments["activation_checkpointing"] = arguments.pop("gradient_checkpointing")
    unknown = sorted(set(arguments) - names)
    if unknown:
        raise RuntimeError(f"trl {trl.__version__}: GRPOConfig has no {', '.join(unknown)}; the mapping needs updating")
    grpo = trl.GRPOConfig(**arguments)
    expected = {"generation_batch_size": config.schedule.group_size * config.schedule.batch_groups,
                "steps_per_generation": 1, "gradient_checkpointing": False, "bf16": False, "fp16": False}
    wrong = {k: getattr(grpo, k) for k, v in expected.items() if getattr(grpo, k) != v}
    if wrong:
        raise RuntimeError(f"trl {trl.__version__}: GRPOConfig resolved {wrong}, expected {expected}")
    return grpo


class TRLMarsReward:
    """Our rollout reward (:class:`pangu_core.rl.run.MarsReward`) as a TRL reward function.

    TRL calls it with the completions' token ids (cut after the first eos, eos included, as ours)
    and the dataset's other columns; ``reference`` holds each prompt's reference answer. Every
    call's mean reward is recorded (one call per optimiser step).
    """

    __name__ = "mars_math"

    def __init__(self, tokenizer) -> None:
        from pangu_core.rl.run import MarsReward

        self.mars = MarsReward(tokenizer)
        self.means: list[float] = []

    def __call__(self, prompts=None, completions=None, completion_ids=None, reference=None, **_: Any) -> list[float]:
        from pangu_core.rl.scheduler import Prompt

        if completion_ids is None or reference is None or len(completion_ids) != len(reference):
            raise ValueError("completion_ids: expected one list of token ids per reference")
        rewards: list[float] = []
        start = 0
        while start < len(completion_ids):   # consecutive rows of one prompt are one group
            end = start
            while end < len(completion_ids) and reference[end] == reference[start]:
                end += 1
            rows = [list(map(int, ids)) for ids in completion_ids[start:end]]
            rewards += self.mars(Prompt(start, (0,), reference=reference[start]), rows)
            start = end
        self.means.append(sum(rewards) / len(rewards))
        return rewards


def steady_groups_per_s(end_times: list[float], batch_groups: int) -> dict[str, Any]:
    """Groups/s from the end of the first step to the end of the last (the window ours uses)."""
    if len(end_times) < 2:
        return {"groups_per_s": float("nan"), "measured_over_steps": 0, "seconds": float("nan")}
    span = end_times[-1] - end_times[0]
    batches = len(end_times) - 1
    return {"groups_per_s": batches * batch_groups / span if span > 0 else float("nan"),
            "measured_over_steps": batches, "seconds": span}


def _accuracy(config: RLConfig, folder: Path) -> dict[str, Any]:
    """Greedy test accuracy of the model in ``folder``, measured as `pangu-core rl` measures its snapshots."""
    from pangu_core.evaluation import evaluate_model
    from pangu_core.rl.run import test_tasks
    from pangu_core.runs import load_model

    model, tokenizer = load_model(folder, config.num_threads)
    result = evaluate_model(model, tokenizer, test_tasks(config), config.eval, progress=False)
    by_level = result["accuracy"].get(config.mode, {})
    return {"by_level": by_level, "mean": statistics.fmean(by_level.values()) if by_level else float("nan")}


def run_ours(config: RLConfig, init: str, out: Path) -> dict[str, Any]:
    """`pangu-core rl` (:func:`pangu_core.rl.run.run_rl`) with ``config``; its figures from report.json."""
    from pangu_core.rl.run import run_rl

    started = time.perf_counter()
    report = run_rl(config, out, init=init, progress=False, plot=False)
    wall = time.perf_counter() - started
    final = [a for a in report["accuracy"] if a["step"] == config.steps]
    start = [a for a in report["accuracy"] if a["step"] == 0]
    return {
        "side": "ours", "eta": config.schedule.eta, "seed": config.seed,
        "groups_per_s": report["throughput"]["groups_per_s"],
        "window": "pangu-core rl's steady state: end of the learner's first step to its last (saves left out)",
        "measured_over_steps": report["throughput"]["measured_over_steps"],
        "window_s": report["throughput"]["seconds"],
        "curves": {k: report["curves"][k] for k in ("step", "time_s", "reward")},
        "accuracy": {"by_level": final[0]["by_level"], "mean": final[0]["mean"]} if final else None,
        "init_accuracy": {"by_level": start[0]["by_level"], "mean": start[0]["mean"]} if start else None,
        "max_lag_consumed": report["max_lag_consumed"],
        "threads": report["threads"], "wall_s": wall,
    }


def run_trl(config: RLConfig, init: str, out: Path, threads: int | None = None) -> dict[str, Any]:
    """TRL's GRPOTrainer with the same checkpoint, prompts, reward and settings as ``config``, at
    ``config.num_threads`` torch threads (``threads``: another count, for a reference run)."""
    import torch
    import trl
    from datasets import Dataset
    from transformers import TrainerCallback

    from pangu_core.dual.chat_format import template_prompts
    from pangu_core.rl.run import build_prompts
    from pangu_core.runs import load_model
    from pangu_core.tasks.math_tasks import generate_math_tasks

    # Time zero as in `pangu-core rl` (its run starts the clock before loading the model).
    started = time.perf_counter()
    threads = config.num_threads if threads is None else threads
    model, tokenizer = load_model(init, threads)
    prompts, _ = build_prompts(config, tokenizer)
    tasks = generate_math_tasks(config.train_prompts, config.levels, "train", config.data_seed, config.test_share)
    texts = template_prompts(tokenizer, [(task.prompt, config.mode) for task in tasks])
    # TRL tokenizes a plain-text prompt with the tokenizer's defaults and applies no chat template to
    # it: the ids must be exactly ours.
    trl_ids = tokenizer(texts)["input_ids"]
    if [tuple(ids) for ids in trl_ids] != [p.ids for p in prompts]:
        raise RuntimeError("init: the tokenizer adds tokens to plain-text prompts; TRL would not see our prompts")
    dataset = Dataset.from_dict({"prompt": texts, "reference": [str(p.reference) for p in prompts]})
    reward = TRLMarsReward(tokenizer)
    ends: list[float] = []
    seen_threads: list[int] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            ends.append(time.perf_counter() - started)
            seen_threads.append(torch.get_num_threads())

    arguments = make_grpo_config(config, out / "trainer")
    trainer = trl.GRPOTrainer(model=model, reward_funcs=[reward], args=arguments, train_dataset=dataset,
                              processing_class=tokenizer, callbacks=[Clock()])
    trainer.train()
    train_s = time.perf_counter() - started
    group = trainer.optimizer.param_groups[0]
    optimizer = {"type": type(trainer.optimizer.optimizer if hasattr(trainer.optimizer, "optimizer")
                              else trainer.optimizer).__name__,
                 "lr": group["lr"], "betas": list(group["betas"]), "eps": group["eps"],
                 "weight_decay": sorted({g["weight_decay"] for g in trainer.optimizer.param_groups})}
    generation = {k: getattr(trainer.generation_config, k, None)
                  for k in ("do_sample", "temperature", "top_k", "top_p", "min_p", "max_new_tokens", "eos_token_id")}
    final = out / "final"
    trainer.model.save_pretrained(final, safe_serialization=True)
    tokenizer.save_pretrained(final)
    del trainer
    accuracy = _accuracy(config, final)
    window = steady_groups_per_s(ends, config.schedule.batch_groups)
    return {
        "side": "trl", "trl_version": str(trl.__version__), "seed": config.seed,
        "groups_per_s": window["groups_per_s"],
        "window": "end of GRPOTrainer's first optimiser step to its last (TrainerCallback.on_step_end)",
        "measured_over_steps": window["measured_over_steps"], "window_s": window["seconds"],
        "curves": {"step": list(range(1, len(ends) + 1)), "time_s": ends, "reward": reward.means[:len(ends)]},
        "accuracy": accuracy, "threads": {"total": threads, "torch_during_steps": sorted(set(seen_threads))},
        "optimizer": optimizer, "generation_config": generation,
        "prompt_ids_equal": True, "train_s": train_s, "wall_s": time.perf_counter() - started,
    }


def run_start_checkpoint(out: Path) -> dict[str, Any]:
    """`pangu-core sft --quick` into ``out``: the start checkpoint of both sides."""
    from pangu_core.distill.sft_cli import CONFIG_DIR, load_run_config, run_sft

    started = time.perf_counter()
    result = run_sft(load_run_config(CONFIG_DIR / "sft_quick.yaml"), out, progress=False, source="sft_quick.yaml")
    return {"side": "sft", "checkpoint": str(out / "checkpoint"), "accuracy": result["accuracy"],
            "wall_s": time.perf_counter() - started}


def run_side(spec: dict[str, Any]) -> dict[str, Any]:
    """Runs one side from a SPEC dict (see the module docstring)."""
    side = spec.get("side")
    if side not in SIDES:
        raise ValueError(f"side: expected one of {SIDES}, got {side!r}")
    out = Path(spec["out"])
    out.mkdir(parents=True, exist_ok=True)
    if side == "sft":
        return run_start_checkpoint(out / "sft_run")
    config = RLConfig.from_dict(spec["config"])
    if side == "ours":
        return run_ours(config, spec["init"], out / "rl")
    threads = spec.get("torch_threads")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"torch_threads: expected None or an int >= 1, got {threads!r}")
    return run_trl(config, spec["init"], out, threads)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m pangu_core.bench._rl_vs_trl_side SPEC.json RESULT.json", file=sys.stderr)
        return 2
    spec = json.loads(Path(args[0]).read_text())
    result = run_side(spec)
    Path(args[1]).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
