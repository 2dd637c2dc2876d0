"""Teachers for distillation: who writes the slow-thinking traces the student is fine-tuned on.

Every teacher answers a list of tasks with one response text per task in the student's response
format (thinking block, then the answer), or ``None`` for a task it could not answer; the loop
drops those and counts them. Two teachers exist:

* :class:`ProgrammaticTeacher`: the embedded default, :func:`pangu_core.tasks.teacher_response`
  (exact worked arithmetic; every task with an arithmetic expression is answered).
* :class:`TransformersTeacher`: a causal LM in a local folder. It samples ``samples`` answers per
  prompt in slow mode, judges their final answers with MARS's math verifier, and keeps the shortest
  correct one (fewest teacher tokens); a prompt with no verified answer is dropped. Its thinking
  markers may differ from the student's: the kept answer is split with the teacher's markers and
  written again with the student's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from pangu_core.config import Config, expect
from pangu_core.dual.response import DEFAULT_MARKERS, ThinkingMarkers
from pangu_core.tasks.dataset import Task


@dataclass(frozen=True)
class TeacherConfig(Config):
    """Which teacher writes the traces, and how a model teacher samples."""

    # "programmatic" (the embedded default) or "transformers" (a model folder in `path`).
    kind: Literal["programmatic", "transformers"] = "programmatic"
    # Folder of the transformers teacher (weights, config, tokenizer with a chat template).
    path: str | None = None
    # Answers sampled per prompt by a model teacher (the shortest correct one is kept).
    samples: int = 4
    # Sampling temperature of a model teacher.
    temperature: float = 0.7
    # Generation limit per answer of a model teacher, in tokens.
    max_new_tokens: int = 256
    # Prompts per generate call of a model teacher (times `samples` sequences).
    batch_size: int = 16
    # The teacher's thinking markers (open, close); empty: the student's.
    markers: tuple[str, ...] = ()

    def validate(self) -> list[str]:
        problems: list[str] = []
        if self.kind == "transformers":
            expect(problems, bool(self.path), "path", "the teacher's model folder for kind 'transformers'", self.path)
        for name in ("samples", "max_new_tokens", "batch_size"):
            expect(problems, getattr(self, name) >= 1, name, "an int >= 1", getattr(self, name))
        expect(problems, math.isfinite(self.temperature) and self.temperature > 0, "temperature",
               "a finite number > 0", self.temperature)
        expect(problems, len(self.markers) in (0, 2) and all(self.markers), "markers",
               "empty, or two non-empty strings (open, close)", list(self.markers))
        return problems


@dataclass
class TeacherStats:
    """What a teacher did for one batch of tasks."""

    requested: int = 0
    answered: int = 0
    # Sampled answers (model teacher) and how many of them were verified correct.
    sampled: int = 0
    verified: int = 0

    @property
    def dropped(self) -> int:
        return self.requested - self.answered


class Teacher(Protocol):
    """Writes one response per task (None: no answer; the task is dropped)."""

    def answer(self, tasks: Sequence[Task]) -> tuple[list[str | None], TeacherStats]: ...


class ProgrammaticTeacher:
    """The embedded default teacher: :func:`pangu_core.tasks.teacher_response` in slow mode."""

    def __init__(self, markers: ThinkingMarkers = DEFAULT_MARKERS):
        self.markers = markers

    def check(self, tasks: Sequence[Task], source: str = "pool") -> None:
        """Raises ValueError naming the first task this teacher cannot work through."""
        from pangu_core.tasks.teacher import teacher_response

        for i, task in enumerate(tasks):
            try:
                teacher_response(task, "slow", self.markers)
            except ValueError as error:
                raise ValueError(f"{source}[{i}] ({task.prompt[:40]!r}): the programmatic teacher cannot answer it "
                                 f"({error}); give a model teacher (--teacher PATH) for such prompts") from None

    def answer(self, tasks: Sequence[Task]) -> tuple[list[str | None], TeacherStats]:
        from pangu_core.tasks.teacher import teacher_response

        responses: list[str | None] = [teacher_response(task, "slow", self.markers) for task in tasks]
        return responses, TeacherStats(requested=len(tasks), answered=len(tasks))


class TransformersTeacher:
    """A causal LM teacher from a local folder; see the module docstring."""

    def __init__(self, config: TeacherConfig, student_markers: ThinkingMarkers = DEFAULT_MARKERS,
                 progress: bool = True):
        from pathlib import Path

        from transformers import AutoModelForCausalLM, AutoTokenizer

        if not isinstance(config, TeacherConfig) or config.kind != "transformers":
            raise ValueError("config: expected a TeacherConfig of kind 'transformers'")
        folder = Path(config.path)
        if not folder.is_dir():
            raise FileNotFoundError(f"teacher.path: {str(folder)!r} is not a model folder")
        self.config, self.student_markers, self.progress = config, student_markers, progress
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        if self.tokenizer.pad_token_id is None:
            raise ValueError(f"teacher.path: the tokenizer in {str(folder)!r} has no pad token")
        if not getattr(self.tokenizer, "chat_template", None):
            raise ValueError(f"teacher.path: the tokenizer in {str(folder)!r} has no chat template")
        self.model = AutoModelForCausalLM.from_pretrained(folder)
        self.model.eval()
        self.markers = ThinkingMarkers(*config.markers) if config.markers else student_markers

    def answer(self, tasks: Sequence[Task]) -> tuple[list[str | None], TeacherStats]:
        import torch
        from tqdm.auto import tqdm

        from pangu_core.dual.chat_format import parse_response, render_response
        from pangu_core.evaluation import _chat_format, _prompt_ids, generate, match_answers
        from pangu_core.rewards.math import MathVerifier

        config, n = self.config, self.config.samples
        chat = _chat_format(self.tokenizer, self.markers)
        responses: list[str | None] = []
        stats = TeacherStats(requested=len(tasks))
        bar = tqdm(total=len(tasks), desc="teacher", disable=not self.progress, dynamic_ncols=True)
        with MathVerifier() as verifier, torch.no_grad():
            for start in range(0, len(tasks), config.batch_size):
                batch = list(tasks[start:start + config.batch_size])
                prompts = _prompt_ids(self.tokenizer, batch, "slow")
                sampled = generate(self.model, self.tokenizer, prompts, config.max_new_tokens, do_sample=True,
                                   temperature=config.temperature, num_return_sequences=n)
                parsed = [parse_response(self.tokenizer.decode(ids, skip_special_tokens=False), chat)
                          for ids in sampled]
                hits = match_answers(verifier, [p.final_answer for p in parsed],
                                     [task.reference for task in batch for _ in range(n)])
                stats.sampled += len(sampled)
                stats.verified += sum(hits)
                for row in range(len(batch)):
                    right = [j for j in range(row * n, (row + 1) * n) if hits[j]]
                    if not right:
                        responses.append(None)
                        continue
                    best = min(right, key=lambda j: (len(sampled[j]), j))
                    turn = parsed[best]
                    responses.append(render_response(turn.thinking or "", turn.answer,
                                                      _student_format(self.student_markers)))
                    stats.answered += 1
                bar.update(len(batch))
        bar.close()
        return responses, stats


def _student_format(markers: ThinkingMarkers):
    from pangu_core.dual.chat_format import ChatFormat

    return ChatFormat(markers=markers)


def make_teacher(config: TeacherConfig, student_markers: ThinkingMarkers = DEFAULT_MARKERS,
                 progress: bool = True) -> Teacher:
    """The teacher a config names."""
    if config.kind == "programmatic":
        return ProgrammaticTeacher(student_markers)
    return TransformersTeacher(config, student_markers, progress)
