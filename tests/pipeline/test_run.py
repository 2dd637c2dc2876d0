"""The pipeline's run logic with the stages replaced by recorders: skip, rerun, resume, --from, the
folder rules, the status display and the capture of the stages' output into the log."""

from __future__ import annotations

import io
import os
import subprocess
import textwrap
import sys

import pytest

from pangu_core.pipeline import run as pipeline_run
from pangu_core.pipeline.config import builtin_config, load_config
from pangu_core.pipeline.display import STAGE_SHARES, Display, capture_output, stage_fraction
from pangu_core.runs import read_json


@pytest.fixture
def calls(monkeypatch):
    """Stages that record (name, overwrite) and write a file into their folder; no report is built."""
    class Calls(list):
        failing: set[str] = set()

    made = Calls()
    failing = made.failing = set()

    def fake_stage(name, config, out, overwrite):
        if name in failing:
            failing.discard(name)
            raise RuntimeError(f"{name} was interrupted")
        made.append((name, overwrite))
        (out / name).mkdir(exist_ok=True)
        (out / name / "done").write_text(str(config.seed))
        return {"stage": name}

    monkeypatch.setattr(pipeline_run, "_run_stage", fake_stage)
    monkeypatch.setattr(pipeline_run, "_stage_report", lambda out, name: {"stage": name, "loaded": True})
    monkeypatch.setattr(pipeline_run, "_copy_model", lambda source, target: target.mkdir(exist_ok=True))
    monkeypatch.setattr("pangu_core.pipeline.report.build_report", lambda config, out, reports, state: {"reports": reports})
    monkeypatch.setattr("pangu_core.pipeline.report.write_outputs", lambda report, out: None)
    return made


@pytest.fixture
def config():
    return load_config(builtin_config("pipeline_quick"))


def test_a_new_run_runs_every_stage_in_order(tmp_path, calls, config):
    report = pipeline_run.run_pipeline(config, tmp_path / "run", progress=False)
    assert calls == [("sft", False), ("distill", False), ("rl", False), ("dual", False)]
    state = read_json(tmp_path / "run" / pipeline_run.STATE_FILE)
    assert all(state["stages"][s]["finished"] for s in ("sft", "distill", "rl", "dual"))
    assert report["reports"]["dual"] == {"stage": "dual"}


def test_an_unchanged_run_skips_every_stage(tmp_path, calls, config):
    pipeline_run.run_pipeline(config, tmp_path / "run", progress=False)
    calls.clear()
    report = pipeline_run.run_pipeline(config, tmp_path / "run", progress=False)
    assert calls == []
    assert all(report["reports"][s]["loaded"] for s in ("sft", "distill", "rl", "dual"))
    assert "rl: done before, skipped" in (tmp_path / "run" / "log.txt").read_text()


def test_a_changed_stage_reruns_from_scratch_with_every_stage_after_it(tmp_path, calls, config):
    pipeline_run.run_pipeline(config, tmp_path / "run", progress=False)
    calls.clear()
    pipeline_run.run_pipeline(config.replace(rl=config.rl.replace(steps=3)), tmp_path / "run", progress=False)
    assert calls == [("rl", True), ("dual", True)]


def test_from_reruns_a_stage_and_the_ones_after_it(tmp_path, calls, config):
    pipeline_run.run_pipeline(config, tmp_path / "run", progress=False)
    calls.clear()
    pipeline_run.run_pipeline(config, tmp_path / "run", from_stage="distill", progress=False)
    assert calls == [("distill", True), ("rl", True), ("dual", True)]
    with pytest.raises(ValueError, match="--from: unknown stage 'eval'"):
        pipeline_run.run_pipeline(config, tmp_path / "run", from_stage="eval", progress=False)


def test_an_interrupted_stage_is_resumed_by_its_driver_and_the_finished_ones_skipped(tmp_path, calls, config):
    calls.failing.add("rl")
    with pytest.raises(RuntimeError, match="rl was interrupted"):
        pipeline_run.run_pipeline(config, tmp_path / "run", progress=False)
    state = read_json(tmp_path / "run" / pipeline_run.STATE_FILE)
    assert state["stages"]["rl"]["finished"] is False and state["stages"]["distill"]["finished"] is True
    calls.clear()
    pipeline_run.run_pipeline(config, tmp_path / "run", progress=False)
    # overwrite False: the RL driver continues from its own checkpoint
    assert calls == [("rl", False), ("dual", False)]
    assert read_json(tmp_path / "run" / pipeline_run.STATE_FILE)["stages"]["rl"]["resumed"] is True


def test_an_interrupted_stage_starts_over_when_a_stage_ahead_of_it_is_rebuilt(tmp_path, calls, config):
    calls.failing.add("rl")
    with pytest.raises(RuntimeError):
        pipeline_run.run_pipeline(config, tmp_path / "run", progress=False)
    calls.failing.add("sft")
    with pytest.raises(RuntimeError):
        pipeline_run.run_pipeline(config, tmp_path / "run", from_stage="sft", progress=False)
    calls.clear()
    pipeline_run.run_pipeline(config, tmp_path / "run", progress=False)
    # SFT resumes its own interrupted rerun; distill and the unfinished RL start over on its new model
    assert calls == [("sft", False), ("distill", True), ("rl", True), ("dual", False)]


def test_an_error_reaches_the_log_and_stderr_is_restored(tmp_path, calls, config):
    saved = sys.stderr
    calls.failing.add("distill")
    with pytest.raises(RuntimeError, match="distill was interrupted"):
        pipeline_run.run_pipeline(config, tmp_path / "run", progress=False)
    assert sys.stderr is saved
    log = (tmp_path / "run" / "log.txt").read_text()
    assert "Traceback" in log and "RuntimeError: distill was interrupted" in log
    os.write(2, b"written after the run\n")
    assert "written after the run" not in (tmp_path / "run" / "log.txt").read_text()


def test_a_finished_sft_not_yet_recorded_is_taken_as_it_is(tmp_path, config):
    from pangu_core.distill.sft_cli import RUN_CONFIG_FILE

    folder = tmp_path / "run" / "sft"
    folder.mkdir(parents=True)
    config.stage("sft").to_yaml(folder / RUN_CONFIG_FILE)
    (folder / "eval.json").write_text('{"accuracy": {"slow": {"1": 0.5}}}')
    assert pipeline_run._run_stage("sft", config, tmp_path / "run", False) == {"accuracy": {"slow": {"1": 0.5}}}


def test_the_folder_rules(tmp_path, calls, config):
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="--out"):
        pipeline_run.run_pipeline(config, tmp_path / "file", progress=False)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="holds no pipeline run"):
        pipeline_run.run_pipeline(config, other, progress=False)
    (other / "sft").mkdir()
    pipeline_run.run_pipeline(config, other, progress=False, overwrite=True)
    assert (other / "notes.txt").read_text() == "mine"       # --overwrite removes only the run's own files
    assert calls[0] == ("sft", False)
    with pytest.raises(TypeError, match="PipelineConfig"):
        pipeline_run.run_pipeline(config.sft, tmp_path / "x")


def test_stage_fractions_follow_the_drivers_log_lines():
    assert stage_fraction("sft", "pangu-core sft: step 400/4000  loss 1.5", 0.0) == pytest.approx(0.095)
    assert stage_fraction("distill", "pangu-core distill: round 2/3", 0.0) == pytest.approx(1 / 3)
    assert stage_fraction("distill", "round 2: sft step 10/40", 0.4) == 0.4      # rounds not known yet
    memory: dict = {}
    stage_fraction("distill", "pangu-core distill: round 2/4", 0.0, memory)
    assert stage_fraction("distill", "pangu-core distill: round 2: sft step 20/40  loss 1", 0.0, memory) == \
        pytest.approx((1 + 0.25 + 0.65 * 0.5) / 4)
    assert stage_fraction("rl", "pangu-core rl: step 20/40  reward 0.5", 0.0) == pytest.approx(0.425)
    assert stage_fraction("dual", "pangu-core dual: labels", 0.1) == 0.4
    assert stage_fraction("dual", "pangu-core dual: phase 2: sft step 450/900  loss 0.1", 0.4) == pytest.approx(0.625)
    assert stage_fraction("dual", "a warning", 0.3) == 0.3


def test_the_display_writes_stage_lines_and_an_eta_from_the_stage_shares():
    now = [0.0]
    stream = io.StringIO()
    display = Display(["sft", "distill"], progress=True, stream=stream, clock=lambda: now[0])
    display.start("sft")
    assert display.eta() is None
    now[0] = 50.0
    display.log_line("pangu-core sft: step 500/1000  loss 0.3")
    # 0.475 of sft's share took 50 s: the rest of both stages' shares takes proportionally longer
    total, done = STAGE_SHARES["sft"] + STAGE_SHARES["distill"], STAGE_SHARES["sft"] * 0.475
    assert display.eta() == pytest.approx(50 * (total - done) / done)
    assert "step 500/1000" in display.status() and "00:50 elapsed" in display.status()
    display.finish("sft", 100.0)
    assert stream.getvalue().splitlines() == ["pipeline [1/2] sft: started", "pipeline [1/2] sft: finished in 01:40"]


def test_capture_sends_python_child_process_and_fd_output_to_the_log(tmp_path):
    stream = io.StringIO()
    display = Display(["sft"], progress=False, stream=stream)
    display.start("sft")
    with capture_output(tmp_path / "log.txt", display):
        print("pangu-core sft: step 3/10  loss 1", file=sys.stderr)
        subprocess.run([sys.executable, "-c", "import sys; sys.stderr.write('from a child\\n')"], check=True)
    log = (tmp_path / "log.txt").read_text()
    assert "step 3/10" in log and "from a child" in log
    assert display.fraction == pytest.approx(0.95 * 0.3)
    assert "step 3/10" not in stream.getvalue()
    print("after", file=sys.stderr)
    assert "after" not in (tmp_path / "log.txt").read_text()


def test_on_a_real_stderr_the_status_stays_on_the_terminal_and_the_stage_output_in_the_log(tmp_path):
    # A child process whose stderr (fd 2) is a pipe: the display must keep writing there while fd 2
    # points at the log, and the stages' lines must go to the log only.
    script = textwrap.dedent(f"""
        import subprocess, sys
        from pangu_core.pipeline.display import Display, capture_output
        display = Display(["sft"], progress=True)
        display.start("sft")
        with capture_output({str(tmp_path / "log.txt")!r}, display):
            print("pangu-core sft: step 5/10  loss 1", file=sys.stderr)
            subprocess.run([sys.executable, "-c", "import os; os.write(2, b'child says hi' + bytes([10]))"], check=True)
            display.finish("sft", 61.0)
        print("back on the terminal", file=sys.stderr)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    terminal, log = done.stderr, (tmp_path / "log.txt").read_text()
    assert "pipeline [1/1] sft: started" in terminal and "sft: finished in 01:01" in terminal
    assert "back on the terminal" in terminal
    assert "step 5/10" not in terminal and "child says hi" not in terminal
    assert "step 5/10" in log and "child says hi" in log and "sft: finished in 01:01" in log
    assert "pipeline [1/1] sft: started" not in log       # started before the capture began


def test_the_command_names_a_bad_seed_or_stage_in_one_line(tmp_path, capsys):
    from pangu_core.cli import main

    assert main(["pipeline", "--quick", "--seed", "-1", "--out", str(tmp_path / "run")]) == 2
    assert "pangu-core pipeline: error: --seed: expected an int >= 0, got -1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["pipeline", "--from", "eval", "--out", str(tmp_path / "run")])
    assert "invalid choice: 'eval'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
