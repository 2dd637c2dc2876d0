"""The transformers path of distillation: a model folder as student, a JSONL pool, a model teacher, pass rates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from pangu_core.distill.config import DistillConfig
from pangu_core.distill.loop import run_distill
from pangu_core.distill.sft import SFTConfig, SFTTrainer, encode_pairs
from pangu_core.dual.chat_format import ChatFormat
from pangu_core.dual.response import ThinkingMarkers
from pangu_core.evaluation import pass_rates
from pangu_core.tasks.dataset import Task, write_jsonl
from pangu_core.tasks.model import tiny_pangu
from pangu_core.tasks.tokenizer import build_tokenizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TEACHER_MARKERS = ThinkingMarkers("<reason>", "</reason>")
TEACHER_ANSWER = "<reason>ok</reason>\\boxed{7}"


def seven_tasks() -> list[Task]:
    """Problems whose answer is 7 (a - b = 7), level 1."""
    return [Task(prompt=f"{a}-{a - 7}", reference="7", difficulty=1) for a in range(7, 67)]


@pytest.fixture(scope="module")
def teacher_folder(tmp_path_factory) -> Path:
    """A nano model with its own thinking markers, trained to answer every prompt with 7."""
    folder = tmp_path_factory.mktemp("teacher")
    torch.set_num_threads(1)
    tokenizer = build_tokenizer(chat_format=ChatFormat(markers=TEACHER_MARKERS))
    pairs = [(task.prompt, "slow", TEACHER_ANSWER) for task in seven_tasks()]
    model = tiny_pangu("nano", tokenizer, seed=0, max_position_embeddings=128)
    trainer = SFTTrainer(model, tokenizer, encode_pairs(tokenizer, pairs, 128),
                         SFTConfig(max_steps=60, batch_size=8, learning_rate=3e-3, warmup_steps=5, seed=0))
    trainer.train(progress=False)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_pass_rates_count_right_sampled_answers(teacher_folder):
    model = AutoModelForCausalLM.from_pretrained(teacher_folder)
    tokenizer = AutoTokenizer.from_pretrained(teacher_folder)
    tasks = seven_tasks()[:4] + [Task(prompt="5+3", reference="8", difficulty=1)]
    counts = pass_rates(model, tokenizer, tasks, "slow", k=3, temperature=0.3, max_new_tokens=24, batch_size=2,
                        markers=TEACHER_MARKERS, progress=False)
    assert counts.dtype.kind == "i" and counts.shape == (5,)
    assert counts[:4].min() >= 2 and counts[4] == 0
    again = pass_rates(model, tokenizer, tasks, "slow", k=3, temperature=0.3, max_new_tokens=24, batch_size=5,
                       markers=TEACHER_MARKERS, progress=False)
    assert again.tolist() == counts.tolist()  # seeded, whatever the batching
    with pytest.raises(ValueError, match="mode: expected one of"):
        pass_rates(model, tokenizer, tasks, "fastest")
    with pytest.raises(ValueError, match="k: expected an int >= 1"):
        pass_rates(model, tokenizer, tasks, k=0)
    with pytest.raises(ValueError, match="tasks\\[0\\]: pass rates judge final answers of math tasks"):
        pass_rates(model, tokenizer, [Task(prompt="print(1)", reference="1", task_type="code")])


def test_one_round_with_a_model_folder_a_jsonl_pool_and_a_model_teacher(tmp_path, start_folder, teacher_folder):
    pool = tmp_path / "pool.jsonl"
    write_jsonl(seven_tasks(), pool)
    config = DistillConfig.from_dict({
        "rounds": 1, "levels": [1], "test_per_level": 20, "num_threads": 1, "tokens_per_round": 400,
        "selection": {"pool_size": 10, "select": 6, "k": 2, "max_new_tokens": 16, "batch_size": 10},
        "teacher": {"kind": "transformers", "path": str(teacher_folder), "samples": 3, "temperature": 0.5,
                    "max_new_tokens": 24, "batch_size": 4, "markers": ["<reason>", "</reason>"]},
        "sft": {"batch_size": 4, "warmup_steps": 1, "max_length": 128},
        "eval": {"modes": ["slow", "fast"], "max_new_tokens": 16, "batch_size": 16},
        "warm_start": {"levels": [1]},
    })
    report = run_distill(config, tmp_path / "run", init=start_folder, data=pool, progress=False)
    round_dir = tmp_path / "run" / "round_1"
    teacher = json.loads((round_dir / "teacher.json").read_text())
    assert teacher["requested"] == 6 and teacher["sampled"] == 18 and teacher["answered"] >= 1
    assert teacher["answered"] + teacher["dropped"] == 6 and teacher["verified"] >= teacher["answered"]
    traces = [json.loads(line) for line in (round_dir / "traces.jsonl").read_text().splitlines()]
    # the teacher's markers were rewritten as the student's
    assert len(traces) == teacher["answered"] and all(t["response"] == "<think>ok</think>\\boxed{7}" for t in traces)
    selected = [json.loads(line) for line in (round_dir / "selection.jsonl").read_text().splitlines()]
    pool_prompts = {task.prompt for task in seven_tasks()}
    assert all(r["prompt"] in pool_prompts for r in selected) and sum(r["selected"] for r in selected) == 6
    tested = report["rounds"][1]["eval"]["last"]["count"]["slow"]
    assert 0 < tested["1"] <= 20
    AutoModelForCausalLM.from_pretrained(round_dir / "merged")  # the merged round loads as a model folder
    assert report["rounds"][1]["sft"]["examples"] == teacher["answered"]
