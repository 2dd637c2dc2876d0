"""`pangu-core bench rl_vs_trl`: TRL configured like ours, the cases' structure, the skip (never the speed)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from pangu_core import bench
from pangu_core.bench import _rl_vs_trl_side as side
from pangu_core.bench import rl_vs_trl

TINY = {"steps": 2, "seeds": (0,), "train_prompts": 12, "test_per_level": 2, "max_new_tokens": 8, "levels": (1, 2),
        "group_size": 2, "batch_groups": 2}


def config(**changes):
    return rl_vs_trl.bench_config(rl_vs_trl.SIZES["quick"], 0, 3).replace(**changes)


# Every setting both systems share is equal in the GRPOConfig arguments.
def test_trl_arguments_equal_ours():
    ours = config()
    args = side.trl_arguments(ours, "out")
    schedule, loss = ours.schedule, ours.grpo
    assert args["max_steps"] == ours.steps and args["seed"] == ours.seed == 3
    assert args["num_generations"] == schedule.group_size
    assert args["per_device_train_batch_size"] == schedule.group_size * schedule.batch_groups
    assert args["gradient_accumulation_steps"] == args["steps_per_generation"] == args["num_iterations"] == 1
    assert args["temperature"] == schedule.temperature and args["max_completion_length"] == schedule.max_new_tokens
    assert (args["top_k"], args["top_p"], args["min_p"], args["repetition_penalty"]) == (0, 1.0, None, 1.0)
    assert args["learning_rate"] == ours.learning_rate and args["lr_scheduler_type"] == "constant"
    assert args["warmup_steps"] == 0 and args["optim"] == "adamw_torch"
    assert (args["adam_beta1"], args["adam_beta2"]) == ours.betas and args["weight_decay"] == ours.weight_decay
    assert args["max_grad_norm"] == ours.max_grad_norm
    assert args["beta"] == loss.kl_coef == 0.0
    assert (args["epsilon"], args["epsilon_high"], args["delta"]) == (loss.clip_low, loss.clip_high, loss.dual_clip)
    assert args["loss_type"] == "dapo" and args["scale_rewards"] == loss.advantage_scale == "group"
    assert args["shuffle_dataset"] is False and args["use_cpu"] is True and args["use_vllm"] is False
    assert args["bf16"] is False and args["fp16"] is False and args["gradient_checkpointing"] is False


# A changed setting on ours changes TRL's.
@pytest.mark.parametrize("change, key, value", [
    (lambda c: c.replace(learning_rate=3e-5), "learning_rate", 3e-5),
    (lambda c: c.replace(betas=(0.8, 0.95)), "adam_beta2", 0.95),
    (lambda c: c.replace(betas=(0.8, 0.95)), "adam_beta1", 0.8),
    (lambda c: c.replace(weight_decay=0.1), "weight_decay", 0.1),
    (lambda c: c.replace(max_grad_norm=0.5), "max_grad_norm", 0.5),
    (lambda c: c.replace(max_grad_norm=None), "max_grad_norm", 0.0),
    (lambda c: c.replace(steps=17), "max_steps", 17),
    (lambda c: c.replace(seed=9), "seed", 9),
    (lambda c: c.replace(schedule=c.schedule.replace(temperature=0.7)), "temperature", 0.7),
    (lambda c: c.replace(schedule=c.schedule.replace(max_new_tokens=40)), "max_completion_length", 40),
    (lambda c: c.replace(schedule=c.schedule.replace(group_size=8)), "num_generations", 8),
    (lambda c: c.replace(schedule=c.schedule.replace(group_size=8)), "per_device_train_batch_size", 32),
    (lambda c: c.replace(schedule=c.schedule.replace(batch_groups=2, prompts_per_claim=2)),
     "per_device_train_batch_size", 8),
    (lambda c: c.replace(grpo=c.grpo.replace(clip_low=0.1)), "epsilon", 0.1),
    (lambda c: c.replace(grpo=c.grpo.replace(clip_high=0.28)), "epsilon_high", 0.28),
    (lambda c: c.replace(grpo=c.grpo.replace(dual_clip=None)), "delta", None),
    (lambda c: c.replace(grpo=c.grpo.replace(kl_coef=0.01)), "beta", 0.01),
    (lambda c: c.replace(grpo=c.grpo.replace(advantage_scale="none")), "scale_rewards", "none"),
])
def test_changed_setting_changes_trl(change, key, value):
    before = side.trl_arguments(config(), "out")
    after = side.trl_arguments(change(config()), "out")
    assert after[key] == value and before[key] != value


def test_trl_arguments_refuses_other_configs():
    with pytest.raises(TypeError, match="config"):
        side.trl_arguments({"steps": 2}, "out")


# TRL accepts the arguments and resolves one generation of G x groups completions per step.
def test_grpo_config_resolves(tmp_path):
    pytest.importorskip("trl")
    ours = config()
    grpo = side.make_grpo_config(ours, tmp_path)
    assert grpo.generation_batch_size == ours.schedule.group_size * ours.schedule.batch_groups
    assert grpo.steps_per_generation == 1 and grpo.gradient_checkpointing is False and grpo.use_cpu
    fields = {f.name for f in dataclasses.fields(grpo)}
    for key, value in side.trl_arguments(ours, tmp_path).items():
        if key in fields and key not in ("output_dir", "report_to", "lr_scheduler_type", "optim", "save_strategy",
                                         "eval_strategy", "scale_rewards"):
            assert getattr(grpo, key) == value, key
    assert str(getattr(grpo.lr_scheduler_type, "value", grpo.lr_scheduler_type)) == "constant"


# The reward TRL gets is ours: 1 for the teacher's answer to the prompt, 0 for another prompt's.
def test_reward_wrapper_is_mars():
    from pangu_core.tasks.math_tasks import generate_math_tasks
    from pangu_core.tasks.teacher import teacher_response
    from pangu_core.tasks.tokenizer import build_tokenizer

    tokenizer = build_tokenizer()
    tasks = [t for t in generate_math_tasks(20, (1,), "train", 0, 0.2)]
    a = tasks[0]
    b = next(t for t in tasks if str(t.reference) != str(a.reference))
    ids = [tokenizer(teacher_response(t, "slow") + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
           for t in (a, b, a)]
    reward = side.TRLMarsReward(tokenizer)
    refs = [str(a.reference)] * 2 + [str(b.reference)]
    assert reward(prompts=["p"] * 3, completions=["c"] * 3, completion_ids=ids, reference=refs) == [1.0, 0.0, 0.0]
    assert reward.means == [pytest.approx(1 / 3)]
    with pytest.raises(ValueError, match="completion_ids"):
        reward(completion_ids=ids, reference=refs[:1])


def fake_runner(calls, trl_1t=0.5):
    """Stand-in for the child processes: fixed figures per arm (ours sync 2, async 3, TRL 1 group/s
    at 2 threads and ``trl_1t`` at one)."""
    def runner(spec, folder):
        if spec["side"] == "ours":
            arm = ("ours_sync", "ours_async")[spec["config"]["schedule"]["eta"]]
        else:
            arm = "trl_1t" if spec.get("torch_threads") == 1 else "trl"
        seed = spec["config"]["seed"]
        calls.append((arm, seed))
        gps = {"ours_sync": 2.0, "ours_async": 3.0, "trl": 1.0, "trl_1t": trl_1t}[arm] + 0.1 * seed
        steps = spec["config"]["steps"]
        result = {"side": spec["side"], "seed": seed, "groups_per_s": gps, "window": f"{arm} window",
                  "measured_over_steps": steps - 1, "window_s": 1.0, "wall_s": 2.0,
                  "threads": {"total": 1 if arm == "trl_1t" else 2},
                  "curves": {"step": list(range(1, steps + 1)), "time_s": [0.5 * s for s in range(1, steps + 1)],
                             "reward": [0.25 + 0.05 * seed] * steps},
                  "accuracy": {"by_level": {"1": 0.5, "2": 0.25}, "mean": 0.375}}
        if spec["side"] == "ours":
            eta = spec["config"]["schedule"]["eta"]
            result.update(eta=eta, init_accuracy={"by_level": {"1": 0.4, "2": 0.2}, "mean": 0.3},
                          max_lag_consumed=eta)
        return result
    return runner


# Two cases from the runs: ratio = median ours / median TRL groups/s, every figure per seed and as
# medians, goals judged, arms rotated per seed, the PNG written and named.
def test_case_structure(tmp_path, monkeypatch, check_spread):
    monkeypatch.setattr(rl_vs_trl, "trl_version", lambda: "9.9.9")
    calls = []
    size = {**TINY, "seeds": (0, 1, 2)}
    cases = rl_vs_trl.run(size=size, init=_folder(tmp_path), figure=tmp_path / "fig.png", runner=fake_runner(calls))
    assert [c["case"] for c in cases] == ["sync_vs_trl", "async_vs_trl"]
    assert [arm for arm, seed in calls if seed == 0] == ["ours_sync", "ours_async", "trl", "trl_1t"]
    assert [arm for arm, seed in calls if seed == 1] == ["ours_async", "trl", "trl_1t", "ours_sync"]
    for case, ours_gps in zip(cases, (2.1, 3.1)):
        assert case["metric"] == "groups/s" and case["baseline"] == rl_vs_trl.BASELINE
        assert case["ours"] == pytest.approx(ours_gps) and case["baseline_value"] == pytest.approx(1.1)
        assert case["ratio"] == pytest.approx(case["ours"] / case["baseline_value"])
        # Seed by seed: ours (2 or 3) + 0.1 seed over TRL's 1 + 0.1 seed; the extremes are seeds 0 and 2.
        assert case["ratio_range"] == pytest.approx(sorted([ours_gps - 0.1, (ours_gps + 0.1) / 1.2]))
        check_spread(case)
        assert case["repeats"] == 3 and case["child_process"] is True and not case.get("failed")
        assert case["trl_version"] == "9.9.9" and case["seeds"] == [0, 1, 2] and case["trl_threads"] == 2
        assert case["ratio_by_trl_threads"]["1"] == pytest.approx(ours_gps / 0.6)
        assert case["trl_by_threads"]["1"]["groups_per_s_median"] == pytest.approx(0.6)
        assert case["groups_per_s_runs"]["trl"] == pytest.approx([1.0, 1.1, 1.2])
        assert case["reward_last"]["ours"] == pytest.approx([0.25, 0.3, 0.35])
        assert case["reward_last"]["trl_median"] == pytest.approx(0.3)
        assert case["test_accuracy"]["ours_median"] == case["test_accuracy"]["trl_median"] == 0.375
        assert case["init_test_accuracy"]["mean"] == 0.3
        assert case["goals"]["ratio_met"] is True
        assert case["goals"]["reward_last_no_lower"]["holds"] is True
        assert case["goals"]["test_accuracy_no_lower"]["holds"] is True
        assert set(case["window"]) == {"ours", "trl"} and case["window"]["trl"] == "trl window"
        assert case["trl_settings"]["loss_type"] == "dapo" and case["differences"]
        assert case["figure"] == str(tmp_path / "fig.png")
        assert [c["seed"] for c in case["reward_curves"]["trl"]] == [0, 1, 2]
        assert case["reward_curves"]["ours"][1]["reward"] == [0.3, 0.3]
    assert cases[1]["eta"] == 1 and cases[1]["max_lag_consumed"] == [1, 1, 1] and cases[1]["goals"]["ratio"] == 1.2
    assert (tmp_path / "fig.png").stat().st_size > 0


# The baseline is the faster TRL: at one thread here, so the ratio and the quality figures are its.
def test_baseline_is_the_faster_trl(tmp_path, monkeypatch):
    monkeypatch.setattr(rl_vs_trl, "trl_version", lambda: "9.9.9")
    cases = rl_vs_trl.run(size=TINY, init=_folder(tmp_path), figure=tmp_path / "f.png",
                          runner=fake_runner([], trl_1t=4.0))
    for case in cases:
        assert case["trl_threads"] == 1 and case["baseline_value"] == pytest.approx(4.0)
        assert case["ratio"] == pytest.approx(case["ours"] / 4.0)
        assert case["ratio_by_trl_threads"]["2"] == pytest.approx(case["ours"] / 1.0)
        assert case["side_threads"]["trl"] == {"total": 1}
    assert cases[0]["goals"]["ratio_met"] is False and cases[1]["goals"]["ratio_met"] is False


# With one seed there is no spread to judge the quality goals by: they are None, with the reason.
def test_one_seed_leaves_quality_goals_open(tmp_path, monkeypatch):
    monkeypatch.setattr(rl_vs_trl, "trl_version", lambda: "9.9.9")
    cases = rl_vs_trl.run(size=TINY, init=_folder(tmp_path), figure=tmp_path / "f.png", runner=fake_runner([]))
    assert cases[0]["repeats"] == 1
    assert cases[0]["goals"]["reward_last_no_lower"]["holds"] is None


# A side that fails gives a failed case (NaN ratio) that names the error; the other figures stay.
def test_failed_side_fails_the_case(tmp_path, monkeypatch):
    monkeypatch.setattr(rl_vs_trl, "trl_version", lambda: "9.9.9")
    good = fake_runner([])

    def runner(spec, folder):
        return {"error": "trl child exited with 1: boom"} if spec["side"] == "trl" else good(spec, folder)

    cases = rl_vs_trl.run(size=TINY, init=_folder(tmp_path), figure=tmp_path / "f.png", runner=runner)
    assert all(c["failed"] and math.isnan(c["ratio"]) and "ratio_range" not in c for c in cases)
    assert cases[0]["errors"] == ["trl child exited with 1: boom"] * 2 and cases[0]["ours"] == pytest.approx(2.0)
    assert bench.failed_cases({"cases": cases}) == ["sync_vs_trl", "async_vs_trl"]


# The spread pairs the sides seed by seed, over the seeds both completed (a failed run drops its seed),
# not by position in the lists of runs.
def test_ratio_range_pairs_runs_by_seed():
    ours = {"seeds": [0, 2], "groups_per_s": [2.0, 6.0]}
    trl = {"seeds": [0, 1, 2], "groups_per_s": [1.0, 5.0, 2.0]}
    assert rl_vs_trl._seed_ratio_range(ours, trl) == [2.0, 3.0]
    assert rl_vs_trl._seed_ratio_range({"seeds": [], "groups_per_s": []}, trl) is None


# Without TRL both cases are skipped with the reason, and nothing runs.
def test_skipped_without_trl(monkeypatch):
    monkeypatch.setattr(rl_vs_trl, "trl_version", lambda: None)

    def runner(spec, folder):
        raise AssertionError("nothing runs without trl")

    cases = rl_vs_trl.run(quick=True, runner=runner)
    assert [c["case"] for c in cases] == ["sync_vs_trl", "async_vs_trl"]
    assert all("trl is not installed" in c["skipped"] and math.isnan(c["ratio"]) for c in cases)
    assert bench.failed_cases({"cases": cases}) == []


def test_bad_arguments(tmp_path, monkeypatch):
    monkeypatch.setattr(rl_vs_trl, "trl_version", lambda: "9.9.9")
    with pytest.raises(FileNotFoundError, match="init"):
        rl_vs_trl.run(size=TINY, init=tmp_path / "nothing", runner=fake_runner([]))
    with pytest.raises(ValueError, match="size"):
        rl_vs_trl.run(size={"steps": 2}, runner=fake_runner([]))
    with pytest.raises(ValueError, match="eta"):
        rl_vs_trl.bench_config(TINY, 2, 0)
    with pytest.raises(ValueError, match="side"):
        side.run_side({"side": "vllm", "out": str(tmp_path)})
    with pytest.raises(ValueError, match="arm"):
        rl_vs_trl.arm_spec("trl_4t", rl_vs_trl.bench_config(TINY, 0, 0), "init")


def test_registered_and_figure_path(tmp_path, monkeypatch):
    assert bench.registry()["rl_vs_trl"] == "pangu_core.bench.rl_vs_trl"
    assert bench.in_all("rl_vs_trl") is False
    monkeypatch.delenv(rl_vs_trl.FIGURE_ENV, raising=False)
    assert rl_vs_trl.figure_path(["rl_vs_trl", "--json", str(tmp_path / "a" / "b.json")]) == tmp_path / "a" / "b.png"
    monkeypatch.chdir(tmp_path)
    assert rl_vs_trl.figure_path(["rl_vs_trl", "--quick"]) == tmp_path / "rl_vs_trl.png"
    monkeypatch.setenv(rl_vs_trl.FIGURE_ENV, str(tmp_path / "figs"))
    assert rl_vs_trl.figure_path([]) == tmp_path / "figs" / "rl_vs_trl.png"


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "init"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text("{}")
    return folder


# The real TRL side, 2 steps of 2 groups of 2 on an untrained nano checkpoint, in its child process:
# the prompt ids are ours, the optimiser and sampling TRL built are the configured ones, every figure
# the case needs is there.
def test_real_trl_side(tmp_path, save_nano):
    pytest.importorskip("trl")
    init = save_nano(tmp_path / "init")
    ours = rl_vs_trl.bench_config(TINY, 0, 0)
    result = rl_vs_trl.run_child({"side": "trl", "config": ours.to_dict(), "init": str(init)}, tmp_path / "trl")
    assert "error" not in result, result.get("error")
    assert result["prompt_ids_equal"] is True and result["trl_version"]
    assert result["curves"]["step"] == [1, 2] and len(result["curves"]["reward"]) == 2
    assert result["measured_over_steps"] == 1 and result["groups_per_s"] > 0
    assert set(result["accuracy"]["by_level"]) == {"1", "2"}
    assert result["optimizer"] == {"type": "AdamW", "lr": ours.learning_rate, "betas": list(ours.betas), "eps": 1e-8,
                                   "weight_decay": [ours.weight_decay]}
    generation = result["generation_config"]
    assert (generation["do_sample"], generation["temperature"], generation["top_k"], generation["top_p"],
            generation["max_new_tokens"]) == (True, ours.schedule.temperature, 0, 1.0, ours.schedule.max_new_tokens)
    assert result["threads"]["torch_during_steps"] == [ours.num_threads]


# The real `pangu-core rl` side (eta = 1) in its child process: the figures it reads from report.json.
def test_real_ours_side(tmp_path, save_nano):
    init = save_nano(tmp_path / "init")
    ours = rl_vs_trl.bench_config(TINY, 1, 0)
    result = rl_vs_trl.run_child({"side": "ours", "config": ours.to_dict(), "init": str(init)}, tmp_path / "ours")
    assert "error" not in result, result.get("error")
    assert result["eta"] == 1 and result["max_lag_consumed"] <= 1
    assert result["curves"]["step"] == [1, 2] and result["measured_over_steps"] == 1 and result["groups_per_s"] > 0
    assert set(result["accuracy"]["by_level"]) == set(result["init_accuracy"]["by_level"]) == {"1", "2"}
    assert result["threads"]["total"] == ours.num_threads
