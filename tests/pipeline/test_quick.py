"""`pangu-core pipeline --quick` for real, once per module: the report's schema, the merge formula on
the saved rounds, the RL invariants, auto mode evaluated, the final model usable, and a second run
that skips every stage."""

from __future__ import annotations

import json

import pytest
import torch

from pangu_core.cli import main
from pangu_core.merge.checkpoint import load_checkpoint
from pangu_core.pipeline.config import builtin_config, load_config
from pangu_core.runs import read_json

STAGES = ("sft", "distill", "rl", "dual")


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("pipeline") / "run"
    torch_threads = torch.get_num_threads()
    try:
        status = main(["pipeline", "--quick", "--no-progress", "--out", str(out)])
    finally:
        torch.set_num_threads(torch_threads)
    assert status == 0
    return out


def test_the_report_has_every_stage_and_the_final_figures(quick):
    report = read_json(quick / "report.json")
    levels = {"1", "2", "3"}
    assert list(report["stages"]) == list(STAGES)
    for name in STAGES:
        stage = report["stages"][name]
        assert set(stage["accuracy"]["slow"]) == levels and set(stage["tokens"]["fast"]) == levels
        assert stage["seconds"] > 0 and stage["resumed"] is False
    final = report["final"]
    for mode in ("slow", "fast", "auto"):
        assert set(final["accuracy"][mode]) == levels and all(0 <= v <= 1 for v in final["accuracy"][mode].values())
        assert set(final["tokens"][mode]) == levels
    assert set(final["fast_share"]["auto"]) == levels
    assert set(final["mode_follow"]["slow"]) == levels and set(final["mode_follow"]["fast"]) == levels
    assert set(final["pareto"]) == {"uniform", "easy_heavy"}
    assert set(final["pareto"]["easy_heavy"]) == {"slow", "fast", "auto", "oracle"}
    assert len(final["sweep"]["points"]) == 2
    assert set(report["targets"]) == {"slow_accuracy_min", "auto_minus_slow_min", "fast_share_level_1",
                                      "auto_tokens_over_slow_easy_heavy"}
    for target in report["targets"].values():
        assert set(target) == {"value", "target", "met"} and target["met"] in (True, False)
    assert report["config"] == load_config(builtin_config("pipeline_quick")).to_dict()
    assert report["machine"]["cores"] >= 1 and report["seed"] == 0
    assert len(report["commits"]) == 1     # the tests run in a checkout: its commit, once
    assert report["commits"][0] is None or len(report["commits"][0].split("+")[0]) == 40
    # the final figures are the dual run's evaluation of its final model, the RL stage's its last snapshot's
    dual = read_json(quick / "dual" / "report.json")
    assert final["accuracy"] == dual["final"]["accuracy"] and final["fast_share"] == dual["final"]["fast_share"]
    assert report["stages"]["rl"]["accuracy"] == read_json(quick / "rl" / "eval" / "step_4.json")["accuracy"]


def test_the_page_and_the_pictures_are_written(quick):
    page = (quick / "report.md").read_text()
    for name in STAGES:
        assert f"| {name} | slow |" in page
    assert "slow_accuracy_min" in page and "report.png" in page
    for picture in ("report.png", "dual/pareto.png", "distill/report.png", "rl/report.png"):
        assert (quick / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", picture
    log = (quick / "log.txt").read_text()
    assert "pangu-core distill: round 2/2" in log and "pangu-core rl: step 4/4" in log


def test_the_distilled_model_is_the_merge_formula_applied_to_the_saved_rounds(quick):
    config = load_config(builtin_config("pipeline_quick")).distill
    assert config.merging.method == "task_arithmetic" and config.merging.delta_reference == "base"
    base = load_checkpoint(quick / "sft" / "checkpoint")
    rounds = [load_checkpoint(quick / "distill" / f"round_{t}" / "checkpoint") for t in range(1, config.rounds + 1)]
    merged = load_checkpoint(quick / "distill" / f"round_{config.rounds}" / "merged")
    lam = config.merging.lambda_
    for name, value in base.items():
        expected = value.double() + lam * sum(r[name].double() - value.double() for r in rounds) / len(rounds)
        assert torch.allclose(merged[name].double(), expected, rtol=0, atol=1e-6), name
    # RL started from exactly that model
    assert read_json(quick / "rl" / "rl_run.json")["init"] == str((quick / "distill" / "round_2" / "merged").resolve())


def test_rl_consumed_no_group_older_than_eta_and_its_queue_ledger_holds(quick):
    rl = read_json(quick / "rl" / "report.json")
    assert rl["eta"] == 1
    assert rl["max_lag_consumed"] <= rl["eta"] and all(int(lag) <= rl["eta"] for lag in rl["lag_histogram"])
    assert rl["ledger_holds"]
    stage = read_json(quick / "report.json")["stages"]["rl"]
    assert stage["max_lag_consumed"] == rl["max_lag_consumed"] and stage["steps"] == 4


def test_the_final_model_folder_answers_in_every_mode(quick):
    from pangu_core.dual import Reasoner

    model = quick / "model"
    assert not (model / "training_state.safetensors").exists()
    reasoner = Reasoner.from_pretrained(model)
    answers = reasoner.answer(["What is 2 + 3?"] * 3, mode="auto", max_new_tokens=24)
    assert len(answers) == 3 and all(a.mode in ("fast", "slow") and a.tokens >= 1 for a in answers)
    fast = reasoner.answer("What is 2 + 3?", mode="fast", max_new_tokens=24)[0]
    assert fast.requested == "fast"


def test_a_second_run_skips_every_stage_and_keeps_the_report(quick, capsys):
    before = read_json(quick / "report.json")
    stamps = {name: (quick / name).stat().st_mtime_ns for name in STAGES}
    assert main(["pipeline", "--quick", "--no-progress", "--out", str(quick)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["targets"].keys() == before["targets"].keys()
    log = (quick / "log.txt").read_text()
    assert all(f"{name}: done before, skipped" in log for name in STAGES)
    assert {name: (quick / name).stat().st_mtime_ns for name in STAGES} == stamps
    after = read_json(quick / "report.json")
    assert after["final"] == before["final"] and after["stages"]["rl"]["accuracy"] == before["stages"]["rl"]["accuracy"]


def test_cli_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("rl:\n  base: rl_default\n  test_per_level: 7\n")
    assert main(["pipeline", "--config", str(bad), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "pangu-core pipeline: error: invalid PipelineConfig" in err and "rl.test_per_level" in err
    assert not (tmp_path / "run").exists()
