"""The distillation loop: merge readings (the bit-exact chain), resume, bad configs and pools, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pangu_core.config import ConfigError
from pangu_core.distill.loop import DistillRun, run_distill
from pangu_core.merge.checkpoint import load_checkpoint
from pangu_core.tasks.dataset import Task, write_jsonl

pytestmark = pytest.mark.usefixtures("one_torch_thread")

def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(folder)


def same_weights(a: Path, b: Path) -> bool:
    left, right = weights(a), weights(b)
    return left.keys() == right.keys() and all(torch.equal(left[k], right[k]) for k in left)


def test_previous_reading_with_lambda_one_is_the_unmerged_chain_bit_for_bit(tmp_path, start_folder, small_config):
    chain = run_distill(small_config(merging={"method": "none"}), tmp_path / "chain", init=start_folder,
                        progress=False, plot=False)
    merged = run_distill(small_config(merging={"method": "task_arithmetic", "delta_reference": "previous",
                                               "lambda_": 1.0, "feed_merged": True}),
                         tmp_path / "previous", init=start_folder, progress=False, plot=False)
    for t in (1, 2):
        assert same_weights(tmp_path / "chain" / f"round_{t}" / "checkpoint",
                            tmp_path / "previous" / f"round_{t}" / "checkpoint")
        assert same_weights(tmp_path / "previous" / f"round_{t}" / "checkpoint",
                            tmp_path / "previous" / f"round_{t}" / "merged")
    assert chain["rounds"][2]["eval"] == merged["rounds"][2]["eval"]
    # round 2 really trained: its weights moved away from round 1's
    assert not same_weights(tmp_path / "chain" / "round_1" / "checkpoint", tmp_path / "chain" / "round_2" / "checkpoint")


def test_base_reading_merges_the_mean_of_the_round_deltas(tmp_path, start_folder, small_config):
    report = run_distill(small_config(merging={"method": "task_arithmetic", "delta_reference": "base",
                                               "lambda_": 0.8}), tmp_path / "run", init=start_folder,
                         progress=False, plot=False)
    base = weights(start_folder)
    rounds = [weights(tmp_path / "run" / f"round_{t}" / "checkpoint") for t in (1, 2)]
    merged = weights(tmp_path / "run" / "round_2" / "merged")
    for name, value in base.items():
        expected = value.double() + 0.8 * sum(r[name].double() - value.double() for r in rounds) / 2
        assert torch.allclose(merged[name].double(), expected, rtol=0, atol=1e-6), name
    # round 2 started from round 1's merged model (feed_merged), which is what the report says
    assert report["rounds"][2]["start"] == str(tmp_path / "run" / "round_1" / "merged")
    assert (tmp_path / "run" / "report.json").is_file()


def test_report_has_the_fields_of_every_round(tmp_path, start_folder, small_config):
    report = run_distill(small_config(selection={"strategy": "fixed_levels", "fixed_levels": [[1], [2]]}),
                         tmp_path / "run", init=start_folder, progress=False)
    assert (tmp_path / "run" / "report.png").stat().st_size > 0
    first, second = report["rounds"][1], report["rounds"][2]
    for entry in (first, second):
        stats = entry["selection"]
        assert stats["pool_size"] == 8 and stats["selected"] == 4
        assert sum(stats["c_histogram_pool"]) == 8 and sum(stats["c_histogram_selected"]) == 4
        assert set(entry["timings"]) == {"score_s", "teacher_s", "sft_s", "merge_s", "eval_s"}
        assert set(entry["eval"]) == {"last", "merged"} and "slow" in entry["eval"]["merged"]["accuracy"]
        assert entry["teacher"]["requested"] == 4 and entry["teacher"]["dropped"] == 0
    assert first["selection"]["level_histogram_selected"] == {"1": 4, "2": 0}
    assert second["selection"]["level_histogram_selected"] == {"1": 0, "2": 4}
    records = [json.loads(line) for line in (tmp_path / "run" / "round_1" / "selection.jsonl").read_text().splitlines()]
    assert len(records) == 8 and sum(r["selected"] for r in records) == 4
    assert all(r["complexity"] == 1 - r["correct"] / 2 for r in records)
    mechanism = report["mechanism"]
    assert len(mechanism["mid_share_gain"]) == 2 and len(mechanism["mean_level_selected"]) == 2
    # fixed levels 1 then 2: the selected mean level rises by construction
    assert mechanism["mean_level_selected"] == [1.0, 2.0] and mechanism["mean_level_rises"] is True


def test_an_interrupted_run_resumes_to_the_same_result(tmp_path, start_folder, monkeypatch, small_config):
    config = small_config()
    straight = run_distill(config, tmp_path / "straight", init=start_folder, progress=False, plot=False)
    calls = {"n": 0}
    original = DistillRun._merge

    def crash_in_round_two(self, t):
        if t == 2 and calls["n"] == 0:
            calls["n"] += 1
            raise KeyboardInterrupt
        return original(self, t)

    monkeypatch.setattr(DistillRun, "_merge", crash_in_round_two)
    with pytest.raises(KeyboardInterrupt):
        run_distill(config, tmp_path / "resumed", init=start_folder, progress=False, plot=False)
    assert (tmp_path / "resumed" / "round_1" / "eval.json").is_file()
    assert not (tmp_path / "resumed" / "round_2" / "eval.json").exists()
    resumed = run_distill(config, tmp_path / "resumed", init=start_folder, progress=False, plot=False)
    for t in (1, 2):
        assert same_weights(tmp_path / "straight" / f"round_{t}" / "merged", tmp_path / "resumed" / f"round_{t}" / "merged")
    assert [r["eval"] for r in straight["rounds"]] == [r["eval"] for r in resumed["rounds"]]
    # another config in the same folder is refused, naming what changed
    with pytest.raises(FileExistsError, match="other settings \\(config\\)"):
        run_distill(small_config(seed=5), tmp_path / "resumed", init=start_folder, progress=False)


def test_warm_start_trains_the_start_checkpoint_when_no_init_is_given(tmp_path, small_config):
    report = run_distill(small_config(rounds=1), tmp_path / "run", progress=False, plot=False)
    assert (tmp_path / "run" / "round_0" / "checkpoint" / "model.safetensors").is_file()
    assert report["rounds"][0]["eval"]["last"]["count"]["slow"] == {"1": 3, "2": 3}
    assert report["rounds"][1]["start"] == str(tmp_path / "run" / "round_0" / "checkpoint")


@pytest.mark.parametrize("changes, message", [
    ({"selection": {"select": 20}}, "selection.select: expected at most pool_size=8"),
    ({"selection": {"strategy": "fixed_levels"}}, "selection.fixed_levels: expected one non-empty list"),
    ({"selection": {"strategy": "fixed_levels", "fixed_levels": [[4]]}}, "selection.fixed_levels\\[0\\]: expected levels"),
    ({"teacher": {"kind": "transformers"}}, "teacher.path: expected the teacher's model folder"),
    ({"merging": {"density": 0.0}}, "merging.density: expected a number in \\(0, 1\\]"),
    ({"merging": {"delta_reference": "first"}}, "merging.delta_reference"),
    ({"rounds": 0}, "rounds: expected an int >= 1"),
    ({"levels": [1, 7]}, "levels: expected distinct levels"),
    ({"warm_start": {"levels": [1, 2, 3]}}, "warm_start.levels: expected the run's levels"),
    ({"tokens_per_round": -1}, "tokens_per_round: expected an int >= 1"),
])
def test_bad_configs_are_refused_naming_the_field(changes, message, small_config):
    with pytest.raises(ConfigError, match=message):
        small_config(**changes)


def test_unknown_keys_are_refused(small_config):
    with pytest.raises(ConfigError, match="selection.poolsize: unknown key"):
        small_config(selection={"poolsize": 3})


def test_bad_pools_and_inputs_give_named_errors(tmp_path, start_folder, small_config):
    config = small_config()
    code = tmp_path / "code.jsonl"
    write_jsonl([Task(prompt="print 1", reference="1", task_type="code", difficulty=1)], code)
    with pytest.raises(ValueError, match="--data: task 1 .* task_type 'code'"):
        run_distill(config, tmp_path / "a", init=start_folder, data=code, progress=False)
    assert not (tmp_path / "a").exists()  # refused before anything was written
    far = tmp_path / "far.jsonl"
    write_jsonl([Task(prompt="1+2", reference="3", difficulty=5)], far)
    with pytest.raises(ValueError, match="--data: task 1 .* difficulty 5, not one of the run's levels \\[1, 2\\]"):
        run_distill(config, tmp_path / "b", init=start_folder, data=far, progress=False)
    words = tmp_path / "words.jsonl"
    write_jsonl([Task(prompt=f"What is the capital number {i}?", reference=str(i), difficulty=1) for i in range(60)],
                words)
    with pytest.raises(ValueError, match="--data\\[0\\] .* the programmatic teacher cannot answer it"):
        run_distill(config, tmp_path / "c", init=start_folder, data=words, progress=False)
    with pytest.raises(FileNotFoundError, match="--init: .* is not a model folder"):
        run_distill(config, tmp_path / "d", init=tmp_path, progress=False)
    with pytest.raises(FileNotFoundError, match="--data: .* is not a file"):
        run_distill(config, tmp_path / "e", init=start_folder, data=tmp_path / "missing.jsonl", progress=False)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="--out: .* is not empty and holds no distillation run"):
        run_distill(config, tmp_path / "busy", init=start_folder, progress=False)
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"


def test_cli_reports_a_bad_config_in_one_line(tmp_path, capsys):
    from pangu_core.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("rounds: 2\nselection:\n  pool_size: 4\n  select: 9\n")
    assert main(["distill", "--config", str(bad), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pangu-core distill: error: ") and "selection.select: expected at most pool_size=4" in err
    assert "\n" not in err and not (tmp_path / "out").exists()


def test_shipped_distill_configs_load_and_round_trip(tmp_path):
    from pangu_core.distill.config import CONFIG_DIR, DistillConfig

    names = sorted(p.name for p in CONFIG_DIR.glob("distill*.yaml"))
    assert names == ["distill_ablate.yaml", "distill_default.yaml", "distill_quick.yaml"]
    for name in names:
        config = DistillConfig.from_yaml(CONFIG_DIR / name)
        assert DistillConfig.from_dict(config.to_dict()) == config
        config.to_yaml(tmp_path / name)
        assert DistillConfig.from_yaml(tmp_path / name) == config
        # the selected share of middling prompts can rise by 0.2 only when N is well below P
        assert config.selection.select <= config.selection.pool_size // 4
