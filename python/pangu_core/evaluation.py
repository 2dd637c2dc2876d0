"""Evaluating a model on a test split: accuracy and generated tokens per mode and difficulty level.

Greedy decoding gives accuracy; :func:`pass_rates` counts right answers among k sampled ones per
task (the complexity score of distillation); sampling ``samples_per_prompt`` answers gives pass@k with the
unbiased estimator (1 - C(n-c, k) / C(n, k)). Prompts are batched (left-padded, sorted by length)
and rendered with the tokenizer's chat template, the mode tag at the end of the user turn. Final
answers are checked by MARS's math verifier (:class:`pangu_core.rewards.math.MathVerifier`, with its
time limits), a batch at a time. Results go to JSON and to a PNG with accuracy and tokens by
difficulty, one line per mode.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from pangu_core.config import Config, expect
from pangu_core.dual.chat_format import ChatFormat, parse_response, template_prompts
from pangu_core.dual.response import MODES, ThinkingMarkers
from pangu_core.rewards.math import MathVerifier
from pangu_core.tasks.dataset import Task


@dataclass(frozen=True)
class EvalConfig(Config):
    """How to evaluate (validated on construction, all problems at once)."""

    # Modes to evaluate: slow (no tag), fast (" /no_think"), auto (" /auto_think").
    modes: tuple[Literal["slow", "fast", "auto"], ...] = ("slow", "fast")
    # Generation limit per answer, in tokens.
    max_new_tokens: int = 256
    # Prompts per generation batch.
    batch_size: int = 64
    # Sampled answers per prompt for pass@k (0 = greedy accuracy only).
    samples_per_prompt: int = 0
    # k values of pass@k (each at most samples_per_prompt).
    pass_k: tuple[int, ...] = (1,)
    # Sampling temperature for pass@k (> 0).
    temperature: float = 1.0
    # Seed of torch's generator before sampling.
    seed: int = 0

    def validate(self) -> list[str]:
        problems: list[str] = []
        expect(problems, len(self.modes) > 0, "modes", f"a non-empty list of {', '.join(MODES)}", self.modes)
        for name in ("max_new_tokens", "batch_size"):
            expect(problems, getattr(self, name) >= 1, name, "an int >= 1", getattr(self, name))
        if expect(problems, self.samples_per_prompt >= 0, "samples_per_prompt", "an int >= 0",
                  self.samples_per_prompt):
            top = self.samples_per_prompt or max(self.pass_k, default=1)
            expect(problems, all(1 <= k <= top for k in self.pass_k), "pass_k",
                   f"ints in [1, samples_per_prompt={self.samples_per_prompt}]", self.pass_k)
        expect(problems, self.temperature > 0, "temperature", "a number > 0", self.temperature)
        return problems


def match_answers(verifier: MathVerifier, predicted: Sequence[str | None], references: Sequence[str]) -> list[bool]:
    """Whether each final answer equals its reference, by MARS's math verifier in one batch.

    ``None`` (no final answer) never matches. Integer answers are decided in this process (exactly);
    anything else goes to the verifier's math-verify workers under its time limit (an overrun is a
    mismatch), which start only when first needed.
    """
    if len(predicted) != len(references):
        raise ValueError(f"references: expected {len(predicted)} items like predicted, got {len(references)}")
    pairs = [(str(reference), answer) for answer, reference in zip(predicted, references) if answer is not None]
    verdicts = iter(verifier.compare(pairs))
    return [answer is not None and next(verdicts).score == 1.0 for answer in predicted]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct."""
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def _prompt_ids(tokenizer, tasks: Sequence[Task], mode: str) -> list[list[int]]:
    texts = template_prompts(tokenizer, [(task.prompt, mode) for task in tasks])
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


@torch.no_grad()
def generate(model, tokenizer, prompts: Sequence[list[int]], max_new_tokens: int, do_sample: bool = False,
             temperature: float = 1.0, num_return_sequences: int = 1) -> list[list[int]]:
    """Continuations of token-id prompts (left-padded batch), each cut after its first eos."""
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id
    longest = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), longest), pad, dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    for row, ids in enumerate(prompts):
        input_ids[row, longest - len(ids):] = torch.tensor(ids)
        mask[row, longest - len(ids):] = 1
    options: dict[str, Any] = {"do_sample": do_sample, "num_return_sequences": num_return_sequences}
    if do_sample:
        options.update(temperature=temperature, top_k=0, top_p=1.0)
    output = model.generate(
        input_ids=input_ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_new_tokens,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=pad, **options,
    )
    results = []
    for row in output[:, longest:].tolist():
        cut = row.index(tokenizer.eos_token_id) + 1 if tokenizer.eos_token_id in row else len(row)
        results.append(row[:cut])
    return results


def _chat_format(tokenizer, markers: ThinkingMarkers) -> ChatFormat:
    return ChatFormat(end=tokenizer.eos_token, pad=tokenizer.pad_token or "", markers=markers)


def pass_rates(model, tokenizer, tasks: Sequence[Task], mode: str = "slow", k: int = 4, temperature: float = 1.0,
               max_new_tokens: int = 256, batch_size: int = 64, seed: int = 0,
               markers: ThinkingMarkers = ThinkingMarkers(), verifier: MathVerifier | None = None,
               progress: bool = True) -> np.ndarray:
    """Right answers per task out of ``k`` sampled ones (int64 array, one count per task).

    Each prompt is rendered in ``mode`` with the tokenizer's chat template and sampled ``k`` times at
    ``temperature`` (top-k and top-p off); final answers are judged by MARS's math verifier, as in
    :func:`evaluate_model`. Prompts go ``batch_size`` at a time (``batch_size * k`` sequences per
    generate call). Sampling is seeded with ``seed``; torch's global generator is restored after.
    """
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
    for name, value in (("k", k), ("max_new_tokens", max_new_tokens), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected an int >= 1, got {value!r}")
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature: expected a finite number > 0, got {temperature!r}")
    tasks = list(tasks)
    for i, task in enumerate(tasks):
        if not isinstance(task, Task):
            raise TypeError(f"tasks[{i}]: expected Task, got {type(task).__name__}")
        if task.task_type != "math":
            raise ValueError(f"tasks[{i}]: pass rates judge final answers of math tasks, got task_type "
                             f"{task.task_type!r}")
    correct = np.zeros(len(tasks), dtype=np.int64)
    if not tasks:
        return correct
    own_verifier = verifier is None
    verifier = MathVerifier() if verifier is None else verifier
    chat = _chat_format(tokenizer, markers)
    was_training = model.training
    model.eval()
    order = sorted(range(len(tasks)), key=lambda i: (len(tasks[i].prompt), i))
    bar = tqdm(total=len(tasks), desc=f"pass rates ({mode}, k={k})", disable=not progress, dynamic_ncols=True)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for start in range(0, len(order), batch_size):
                rows = order[start:start + batch_size]
                prompts = _prompt_ids(tokenizer, [tasks[i] for i in rows], mode)
                sampled = generate(model, tokenizer, prompts, max_new_tokens, do_sample=True,
                                   temperature=temperature, num_return_sequences=k)
                finals = [parse_response(tokenizer.decode(ids, skip_special_tokens=False), chat).final_answer
                          for ids in sampled]
                hits = match_answers(verifier, finals, [tasks[i].reference for i in rows for _ in range(k)])
                for j, i in enumerate(rows):
                    correct[i] = sum(hits[j * k:(j + 1) * k])
                bar.update(len(rows))
    finally:
        bar.close()
        model.train(was_training)
        if own_verifier:
            verifier.close()
    return correct


def evaluate_model(model, tokenizer, tasks: Sequence[Task], config: EvalConfig = EvalConfig(),
                   markers: ThinkingMarkers = ThinkingMarkers(), progress: bool = True,
                   verifier: MathVerifier | None = None) -> dict[str, Any]:
    """Accuracy and mean generated tokens (eos included) per mode and difficulty, plus pass@k when sampling.

    Answers are checked by ``verifier`` (MARS's math verifier; one batch per generation batch); by
    default one is made for this call, with ``MathConfig``'s time limits, and closed at its end.
    Returns ``{"accuracy": {mode: {level: float}}, "tokens": {...}, "count": {...},
    "constant_answer_accuracy": {level: float}, "pass_at_k": {mode: {level: {k: float}}} (when
    sampling), "examples": {mode: [...]}}``; levels are string keys ("1".."5").
    """
    if not isinstance(config, EvalConfig):
        raise TypeError(f"config: expected EvalConfig, got {type(config).__name__}")
    if not tasks:
        raise ValueError("tasks: expected at least one task")
    if any(not isinstance(t, Task) for t in tasks):
        raise TypeError("tasks: expected Task items")
    if verifier is not None and not isinstance(verifier, MathVerifier):
        raise TypeError(f"verifier: expected MathVerifier, got {type(verifier).__name__}")
    own_verifier = verifier is None
    verifier = MathVerifier() if verifier is None else verifier
    chat = _chat_format(tokenizer, markers)
    was_training = model.training
    model.eval()
    correct: dict = defaultdict(lambda: defaultdict(int))
    tokens: dict = defaultdict(lambda: defaultdict(int))
    count: dict = defaultdict(lambda: defaultdict(int))
    passes: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    examples: dict = defaultdict(list)
    order = sorted(range(len(tasks)), key=lambda i: (len(tasks[i].prompt), i))
    total = len(config.modes) * math.ceil(len(tasks) / config.batch_size)
    bar = tqdm(total=total, desc="eval", disable=not progress, dynamic_ncols=True)
    torch.manual_seed(config.seed)

    def final_answer(ids: list[int]) -> tuple[str, str | None]:
        text = tokenizer.decode(ids, skip_special_tokens=False)
        return text, parse_response(text, chat).final_answer

    try:
        for mode in config.modes:
            for start in range(0, len(order), config.batch_size):
                batch = [tasks[i] for i in order[start:start + config.batch_size]]
                prompts = _prompt_ids(tokenizer, batch, mode)
                outputs = generate(model, tokenizer, prompts, config.max_new_tokens)
                texts, finals = zip(*(final_answer(ids) for ids in outputs))
                matches = match_answers(verifier, finals, [task.reference for task in batch])
                for task, ids, text, ok in zip(batch, outputs, texts, matches):
                    level = str(task.difficulty)
                    correct[mode][level] += ok
                    tokens[mode][level] += len(ids)
                    count[mode][level] += 1
                    if len(examples[mode]) < 3 or (not ok and len(examples[mode]) < 6):
                        examples[mode].append({"prompt": task.prompt, "reference": task.reference,
                                               "response": text, "correct": ok})
                if config.samples_per_prompt:
                    n = config.samples_per_prompt
                    sampled = generate(model, tokenizer, prompts, config.max_new_tokens, do_sample=True,
                                       temperature=config.temperature, num_return_sequences=n)
                    hits = match_answers(verifier, [final_answer(ids)[1] for ids in sampled],
                                         [task.reference for task in batch for _ in range(n)])
                    for row, task in enumerate(batch):
                        right = sum(hits[row * n:(row + 1) * n])
                        for k in config.pass_k:
                            passes[mode][str(task.difficulty)][str(k)].append(pass_at_k(n, right, k))
                bar.update(1)
    finally:
        bar.close()
        model.train(was_training)
        if own_verifier:
            verifier.close()

    def levels(table: dict, mode: str, scale: dict) -> dict[str, float]:
        return {lv: table[mode][lv] / scale[mode][lv] for lv in sorted(scale[mode], key=int)}

    result: dict[str, Any] = {
        "accuracy": {m: levels(correct, m, count) for m in config.modes},
        "tokens": {m: levels(tokens, m, count) for m in config.modes},
        "count": {m: dict(sorted(count[m].items(), key=lambda kv: int(kv[0]))) for m in config.modes},
    }
    # What always answering the most common reference of a level would score: the floor to beat.
    references: dict = defaultdict(lambda: defaultdict(int))
    for task in tasks:
        references[str(task.difficulty)][task.reference] += 1
    result["constant_answer_accuracy"] = {lv: max(refs.values()) / sum(refs.values())
                                          for lv, refs in sorted(references.items(), key=lambda kv: int(kv[0]))}
    if config.samples_per_prompt:
        result["pass_at_k"] = {m: {lv: {k: sum(v) / len(v) for k, v in passes[m][lv].items()}
                                   for lv in sorted(passes[m], key=int)} for m in config.modes}
    result["examples"] = dict(examples)
    return result


def write_report(result: dict[str, Any], directory: str | Path, stem: str = "eval") -> tuple[Path, Path]:
    """Writes ``<stem>.json`` and ``<stem>.png`` (accuracy and tokens by difficulty, a line per mode)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    json_path, png_path = directory / f"{stem}.json", directory / f"{stem}.png"
    json_path.write_text(json.dumps(result, indent=2))
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for mode, by_level in result["accuracy"].items():
        keys = sorted(by_level, key=int)
        left.plot([int(k) for k in keys], [by_level[k] for k in keys], marker="o", label=mode)
        tokens = result["tokens"][mode]
        right.plot([int(k) for k in keys], [tokens[k] for k in keys], marker="o", label=mode)
    left.set(xlabel="difficulty level", ylabel="accuracy (greedy)", ylim=(-0.02, 1.02), title="accuracy by difficulty")
    right.set(xlabel="difficulty level", ylabel="mean generated tokens", title="tokens by difficulty")
    levels = sorted({int(k) for by_level in result["accuracy"].values() for k in by_level})
    for axis in (left, right):
        axis.set_xticks(levels)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(png_path, dpi=100)
    plt.close(figure)
    return json_path, png_path
