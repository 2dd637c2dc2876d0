"""The lightweight LLM evaluator for tasks without a checkable answer, behind rules and metrics.

Order of decision, so a model is consulted only where rules cannot decide:
1. rules: an empty or trivial answer (no letters or digits, a bare "Thought process:", an
   unfinished "Answer:") scores 0; an exact match of the reference scores 1;
2. deterministic metrics against the reference: exact match and token F1;
3. the evaluator: any transformers causal LM from a local path, prompted with a rubric, decoding
   greedily in batches; "Score: N/10" is parsed; unparsable output gives ``neutral_score`` with a
   reason.
Metrics and evaluator are fused with ``JudgeConfig`` weights (renormalised over what is present).
"""

from __future__ import annotations

import re
import string
import threading
from collections import Counter
from typing import Sequence

from pangu_core.dual.response import split_thinking
from pangu_core.rewards.config import JudgeConfig
from pangu_core.rewards.types import SourceScore

RUBRIC = (
    "You are grading an answer. Rubric: {rubric}\n"
    "Question: {prompt}\nReference answer: {reference}\nAnswer to grade: {answer}\n"
    "Give a score from 0 to 10 as 'Score: N'.\nScore:"
)
DEFAULT_RUBRIC = "correct, complete, concise"
_TRIVIAL = {"thought process", "answer", "final answer", "solution", "response", "i don't know",
            "i do not know", "n/a", "none", "null", "todo", "...", "let me think", "the answer is"}
_NUMBER = r"(-?\d+(?:\.\d+)?)\s*(?:/\s*(\d+(?:\.\d+)?))?"
# The prompt ends with "Score:", so the continuation either starts with the number or restates it.
_SCORE_AT_START = re.compile(r"^\s*" + _NUMBER)
_SCORE_LABELLED = re.compile(r"(?:score|rating)\s*[:=]\s*" + _NUMBER, re.IGNORECASE)
_ALNUM = re.compile(r"[^\W_]")  # a letter or digit
# Characters of an answer kept for the evaluator, per prompt token: prompts are cut from the left
# to max_prompt_tokens anyway, so a longer answer only costs tokenizer time (seconds for 10 MB).
_CHARS_PER_TOKEN_KEPT = 64


def normalise_text(text: str) -> str:
    text = text.lower().translate(str.maketrans("", "", string.punctuation))
    return " ".join(w for w in text.split() if w not in ("a", "an", "the"))


def exact_match(answer: str, reference: str) -> float:
    return float(normalise_text(answer) == normalise_text(reference) and bool(normalise_text(reference)))


def token_f1(answer: str, reference: str) -> float:
    """Harmonic mean of token precision and recall after normalisation (SQuAD-style)."""
    got, want = normalise_text(answer).split(), normalise_text(reference).split()
    if not got or not want:
        return 0.0
    common = sum((Counter(got) & Counter(want)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(got), common / len(want)
    return 2 * precision * recall / (precision + recall)


def rule_check(answer: str, reference: str | None) -> SourceScore | None:
    """A verdict when rules can decide (trivial answer -> 0, exact reference -> 1), else None."""
    stripped = answer.strip()
    if _ALNUM.search(stripped) is None:
        return SourceScore(0.0, "empty answer" if not stripped else "trivial answer")
    key = stripped.lower().rstrip(" :.-").strip()
    if key in _TRIVIAL or (stripped.endswith(":") and len(stripped.split()) <= 4):
        return SourceScore(0.0, "trivial answer")
    if reference and exact_match(stripped, reference):
        return SourceScore(1.0, "exact match")
    return None


def parse_score(text: str, scale: float = 10.0) -> float | None:
    """The first "Score: N" (or "N/M") in the evaluator's output as a fraction in [0, 1], or None."""
    match = _SCORE_AT_START.match(text) or _SCORE_LABELLED.search(text)
    if match is None:
        return None
    value = float(match.group(1))
    denominator = float(match.group(2)) if match.group(2) else scale
    if denominator <= 0:
        return None
    return min(1.0, max(0.0, value / denominator))


class LLMJudge:
    """A causal LM evaluator from a local path. Thread-safe (one generation at a time)."""

    def __init__(self, config: JudgeConfig) -> None:
        if not isinstance(config, JudgeConfig):
            raise TypeError(f"config: expected JudgeConfig, got {type(config).__name__}")
        if not config.model_path:
            raise ValueError("config.model_path: expected a local model folder, got ''")
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.config = config
        self.tokenizer = AutoTokenizer.from_pretrained(config.model_path, local_files_only=True)
        self.tokenizer.padding_side = "left"
        self.tokenizer.truncation_side = "left"  # a long prompt loses its start, never the "Score:" cue
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(config.model_path, local_files_only=True)
        self.model.to(config.device).eval()
        self._torch = torch
        self._lock = threading.Lock()

    def generate(self, prompts: Sequence[str]) -> list[str]:
        """Greedy continuations of ``prompts``, ``batch_size`` at a time."""
        outputs: list[str] = []
        with self._lock, self._torch.inference_mode():
            for start in range(0, len(prompts), self.config.batch_size):
                batch = list(prompts[start:start + self.config.batch_size])
                encoded = self.tokenizer(batch, return_tensors="pt", padding=True, truncation=True,
                                         max_length=self.config.max_prompt_tokens).to(self.config.device)
                generated = self.model.generate(
                    **encoded, do_sample=False, max_new_tokens=self.config.max_new_tokens,
                    pad_token_id=self.tokenizer.pad_token_id,
                )
                new = generated[:, encoded["input_ids"].shape[1]:]
                outputs += self.tokenizer.batch_decode(new, skip_special_tokens=True)
        return outputs

    def evaluate(self, prompts: Sequence[str], answers: Sequence[str], references: Sequence[str | None],
                 rubrics: Sequence[str | None] | None = None) -> list[SourceScore]:
        """Evaluator scores; ``rubrics[i]`` (default ``DEFAULT_RUBRIC``) is what answer i is graded on."""
        rubrics = rubrics if rubrics is not None else [None] * len(prompts)
        keep = self.config.max_prompt_tokens * _CHARS_PER_TOKEN_KEPT
        texts = [RUBRIC.format(rubric=k or DEFAULT_RUBRIC, prompt=p, reference=r or "(none)", answer=a[-keep:])
                 for p, a, r, k in zip(prompts, answers, references, rubrics)]
        scores = []
        for output in self.generate(texts):
            value = parse_score(output)
            if value is None:
                scores.append(SourceScore(self.config.neutral_score, "unparsable evaluator output", decided=False))
            else:
                scores.append(SourceScore(value))
        return scores


class JudgeScorer:
    """Rules, then metrics fused with the evaluator (when a model is configured)."""

    def __init__(self, config: JudgeConfig | None = None, judge: LLMJudge | None = None) -> None:
        self.config = config or JudgeConfig()
        self.judge = judge if judge is not None else (LLMJudge(self.config) if self.config.model_path else None)

    def score(self, prompts: Sequence[str], responses: Sequence[str], references: Sequence[str | None],
              rubrics: Sequence[str | None] | None = None) -> list[SourceScore]:
        """One fused score per response; ``rubrics`` (optional, per sample) go to the evaluator."""
        if not (len(prompts) == len(responses) == len(references)):
            raise ValueError("prompts, responses, references: expected equal lengths, got "
                             f"{len(prompts)}, {len(responses)}, {len(references)}")
        answers = []
        for i, response in enumerate(responses):
            if not isinstance(response, str):
                raise TypeError(f"responses[{i}]: expected str, got {type(response).__name__}")
            parsed = split_thinking(response)
            answers.append(parsed.answer if parsed.closed else "")
        out: list[SourceScore | None] = [rule_check(a, r) for a, r in zip(answers, references)]
        undecided = [i for i, s in enumerate(out) if s is None]
        judged: dict[int, SourceScore] = {}
        if self.judge is not None and undecided:
            verdicts = self.judge.evaluate([prompts[i] for i in undecided], [answers[i] for i in undecided],
                                           [references[i] for i in undecided],
                                           None if rubrics is None else [rubrics[i] for i in undecided])
            judged = dict(zip(undecided, verdicts))
        for i in undecided:
            out[i] = self._fuse(answers[i], references[i], judged.get(i))
        return out  # type: ignore[return-value]

    def _fuse(self, answer: str, reference: str | None, verdict: SourceScore | None) -> SourceScore:
        parts: list[tuple[float, float]] = []
        if reference:
            parts += [(self.config.exact_weight, exact_match(answer, reference)),
                      (self.config.f1_weight, token_f1(answer, reference))]
        if verdict is not None:
            parts.append((self.config.judge_weight, verdict.score))
        total = sum(w for w, _ in parts)
        if total <= 0:
            return SourceScore(self.config.neutral_score, "no reference and no evaluator", decided=False)
        score = sum(w * v for w, v in parts) / total
        reason = verdict.reason if verdict is not None else ""
        return SourceScore(score, reason, decided=verdict.decided if verdict is not None else True)
