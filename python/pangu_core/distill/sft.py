"""Supervised fine-tuning of any transformers causal LM on (prompt, response) pairs, resumable exactly.

The loss is the causal-LM loss on response tokens only (prompt and padding are masked). Batches
are bucketed by length: each epoch is a seeded permutation cut into pools of ``bucket_batches``
batches, each pool sorted by length and cut into batches, and the batch order shuffled again, so
little compute goes to padding while the order stays random. AdamW with linear warmup and cosine
decay, gradient clipping. A checkpoint holds the weights (safetensors) and config, the tokenizer,
and the training state (optimizer, scheduler, RNG states, data position): resuming one continues
bit for bit where the straight run would have been.

Data parallel: when ``torch.distributed`` is initialised (gloo across local processes is enough),
each rank computes its share of every batch and the gradients are summed across ranks before the
step, so N processes take the same steps as one process would (up to the order of float sums);
rank 0 writes checkpoints.

Curriculum: instead of one list of examples the trainer takes a list of :class:`Stage`; each stage's
examples feed the steps up to its ``until_step``, with their own seeded epochs, so what the model sees
can change during training (easy levels first, hard ones later) while the optimizer and learning-rate
schedule run on unchanged.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from pangu_core.config import FromMapping
from pangu_core.dual.chat_format import template_prompts

IGNORE_INDEX = -100
STATE_FILE = "training_state.pt"
CONFIG_FILE = "sft_config.json"


@dataclass(frozen=True)
class SFTConfig(FromMapping):
    """Optimisation settings of one SFT run (validated on construction, all problems at once)."""

    max_steps: int = 1000
    batch_size: int = 32
    learning_rate: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 50
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.98)
    grad_clip: float = 1.0
    bucket_batches: int = 16
    max_length: int = 512
    seed: int = 0
    log_every: int = 10

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas", tuple(self.betas))
        problems = []

        def positive_int(name: str, allow_zero: bool = False) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if allow_zero else 1):
                problems.append(f"{name}: expected an int >= {0 if allow_zero else 1}, got {value!r}")

        for name in ("max_steps", "batch_size", "bucket_batches", "max_length", "log_every"):
            positive_int(name)
        for name in ("warmup_steps", "seed"):
            positive_int(name, allow_zero=True)
        for name, low, high in (("learning_rate", 0.0, 10.0), ("min_lr_ratio", -1e-12, 1.0),
                                ("weight_decay", -1e-12, 10.0), ("grad_clip", 0.0, 1e9)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low < value <= high:
                problems.append(f"{name}: expected a number in ({max(low, 0)}, {high}], got {value!r}")
        if len(self.betas) != 2 or not all(isinstance(b, (int, float)) and 0.0 <= b < 1.0 for b in self.betas):
            problems.append(f"betas: expected two numbers in [0, 1), got {self.betas!r}")
        if problems:
            raise ValueError("invalid SFTConfig: " + "; ".join(problems))


@dataclass(frozen=True)
class SFTExample:
    """One tokenized pair; the loss covers ``response_ids`` only."""

    prompt_ids: tuple[int, ...]
    response_ids: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.prompt_ids) + len(self.response_ids)


@dataclass(frozen=True)
class Stage:
    """One part of a curriculum: the trainer draws its batches from ``examples`` until step ``until_step``."""

    until_step: int
    examples: Sequence[SFTExample]


def _stages(examples: Sequence[SFTExample] | Sequence[Stage], max_steps: int) -> list[Stage]:
    """``examples`` as a checked list of stages (a plain list of examples is one stage)."""
    if not examples:
        raise ValueError("examples: expected at least one example")
    if not isinstance(examples[0], Stage):
        return [Stage(max_steps, list(examples))]
    stages, previous = [], 0
    for i, stage in enumerate(examples):
        if not isinstance(stage, Stage):
            raise TypeError(f"examples[{i}]: expected Stage like examples[0], got {type(stage).__name__}")
        end = stage.until_step
        if isinstance(end, bool) or not isinstance(end, int) or not previous < end <= max_steps:
            raise ValueError(f"examples[{i}].until_step: expected an int in ({previous}, {max_steps}], got {end!r}")
        if not stage.examples:
            raise ValueError(f"examples[{i}].examples: expected at least one example")
        stages.append(Stage(end, list(stage.examples)))
        previous = end
    if previous != max_steps:
        raise ValueError(f"examples[-1].until_step: expected the last stage to end at max_steps={max_steps}, got {previous}")
    return stages


def encode_pairs(tokenizer, pairs: Sequence[tuple[str, str, str]], max_length: int = 512) -> list[SFTExample]:
    """Tokenizes (user prompt, mode, response) triples with the tokenizer's chat template.

    The mode tag goes at the end of the user text (as openPangu and Qwen3 read it); the response
    gets the tokenizer's eos token appended. Pairs longer than ``max_length`` are an error.
    """
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError("tokenizer: expected a tokenizer with a chat template")
    if tokenizer.eos_token is None:
        raise ValueError("tokenizer: expected an eos_token")
    prompt_texts = template_prompts(tokenizer, [(prompt, mode) for prompt, mode, _ in pairs])
    response_texts = [response + tokenizer.eos_token for _, _, response in pairs]
    # One batched call each: the Rust tokenizer is much faster on a list than item by item.
    prompt_ids = tokenizer(prompt_texts, add_special_tokens=False)["input_ids"] if pairs else []
    response_ids = tokenizer(response_texts, add_special_tokens=False)["input_ids"] if pairs else []
    examples = []
    for index, (prompt, response) in enumerate(zip(prompt_ids, response_ids)):
        if len(prompt) + len(response) > max_length:
            raise ValueError(f"pairs[{index}]: {len(prompt) + len(response)} tokens, more than max_length {max_length}")
        examples.append(SFTExample(tuple(prompt), tuple(response)))
    return examples


def collate(examples: Sequence[SFTExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded input_ids, attention_mask and labels ([batch, longest]); labels mask the prompt."""
    longest = max(len(e) for e in examples)
    input_ids = torch.full((len(examples), longest), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), longest), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), longest), dtype=torch.long)
    for row, example in enumerate(examples):
        ids = example.prompt_ids + example.response_ids
        input_ids[row, :len(ids)] = torch.tensor(ids)
        labels[row, len(example.prompt_ids):len(ids)] = torch.tensor(example.response_ids)
        attention_mask[row, :len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def epoch_batches(lengths: Sequence[int], batch_size: int, bucket_batches: int, seed: int, epoch: int,
                  stage: int = 0) -> list[list[int]]:
    """The batches (lists of example indices) of one epoch of a curriculum stage, bucketed by length.

    Pure in its inputs.
    """
    rng = np.random.default_rng([seed, epoch] if stage == 0 else [seed, epoch, stage])
    order = rng.permutation(len(lengths))
    pool = batch_size * bucket_batches
    batches = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start:start + pool].tolist(), key=lambda i: (lengths[i], i))
        batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches)).tolist()]


def lr_factor(step: int, warmup_steps: int, max_steps: int, min_lr_ratio: float) -> float:
    """Multiplier of the peak learning rate at ``step``: linear warmup, then cosine to ``min_lr_ratio``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _world() -> tuple[int, int]:
    """(rank, world size) of the initialised default process group, else (0, 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def response_loss_sum(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Summed next-token cross-entropy over the labelled (response) positions of ``batch``."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logits = logits[:, :-1].float()
    labels = batch["labels"][:, 1:]
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                             ignore_index=IGNORE_INDEX, reduction="sum")


@dataclass
class TrainLog:
    """What a train() call did: loss per optimizer step, response tokens seen, seconds."""

    losses: list[float]
    tokens: int
    seconds: float


class SFTTrainer:
    """Trains ``model`` on ``examples``; see the module docstring for what is saved and resumed.

    Construction seeds torch's and Python's global generators with ``config.seed`` (the run owns
    them: dropout or sampling inside the model must replay on resume).
    """

    def __init__(self, model, tokenizer, examples: Sequence[SFTExample], config: SFTConfig = SFTConfig()):
        if not isinstance(config, SFTConfig):
            raise TypeError(f"config: expected SFTConfig, got {type(config).__name__}")
        if not isinstance(model, torch.nn.Module) or not hasattr(model, "save_pretrained"):
            raise TypeError(f"model: expected a transformers PreTrainedModel, got {type(model).__name__}")
        if tokenizer.pad_token_id is None:
            raise ValueError("tokenizer: expected a pad token (set tokenizer.pad_token)")
        self.model, self.tokenizer, self.config = model, tokenizer, config
        self.stages = _stages(examples, config.max_steps)
        self._stage_lengths = [[len(e) for e in stage.examples] for stage in self.stages]
        self.rank, self.world_size = _world()
        if self.world_size > 1:
            import torch.distributed as dist

            # Every rank starts from rank 0's weights, whatever seeds built the model elsewhere.
            with torch.no_grad():
                for tensor in list(model.parameters()) + list(model.buffers()):
                    dist.broadcast(tensor.data, src=0)
        decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim >= 2]
        no_decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim < 2]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=config.learning_rate, betas=config.betas,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, config.warmup_steps, config.max_steps, config.min_lr_ratio)
        )
        self.step = 0
        torch.manual_seed(config.seed)
        random.seed(config.seed)
        self._enter(0, epoch=0, batch_in_epoch=0)

    def _enter(self, stage: int, epoch: int, batch_in_epoch: int) -> None:
        """Positions the data stream at ``batch_in_epoch`` of ``epoch`` of curriculum ``stage``."""
        self.stage, self.epoch, self.batch_in_epoch = stage, epoch, batch_in_epoch
        self.examples, self.lengths = self.stages[stage].examples, self._stage_lengths[stage]
        self._batches = epoch_batches(self.lengths, self.config.batch_size, self.config.bucket_batches,
                                      self.config.seed, epoch, stage)

    def _next_batch(self) -> list[int]:
        if self.step >= self.stages[self.stage].until_step:
            self._enter(self.stage + 1, epoch=0, batch_in_epoch=0)
        elif self.batch_in_epoch >= len(self._batches):
            self._enter(self.stage, self.epoch + 1, batch_in_epoch=0)
        batch = self._batches[self.batch_in_epoch]
        self.batch_in_epoch += 1
        return batch

    def train(self, until_step: int | None = None, progress: bool = True) -> TrainLog:
        """Runs optimizer steps up to ``until_step`` (default: config.max_steps)."""
        target = self.config.max_steps if until_step is None else until_step
        if isinstance(target, bool) or not isinstance(target, int) or not self.step <= target <= self.config.max_steps:
            raise ValueError(f"until_step: expected an int in [{self.step}, {self.config.max_steps}], got {until_step!r}")
        self.model.train()
        device = next(self.model.parameters()).device
        pad_id = self.tokenizer.pad_token_id
        losses, tokens, started = [], 0, time.perf_counter()
        bar = tqdm(total=target - self.step, desc="sft", disable=not progress or self.rank != 0, dynamic_ncols=True)
        window_loss, window_tokens, window_start = 0.0, 0, time.perf_counter()
        while self.step < target:
            indices = self._next_batch()
            mine = indices[self.rank::self.world_size]
            # The loss is the mean over the whole batch's response tokens, on every rank.
            targets = max(1, sum(len(self.examples[i].response_ids) - (not self.examples[i].prompt_ids)
                                 for i in indices))
            seen = 0
            if mine:
                batch = collate([self.examples[i] for i in mine], pad_id)
                batch = {k: v.to(device) for k, v in batch.items()}
                loss_sum = response_loss_sum(self.model, batch)
                (loss_sum / targets).backward()
                seen = int(batch["attention_mask"].sum())
                value = float(loss_sum.detach())
            else:
                value = 0.0
            if self.world_size > 1:
                value, seen = self._all_reduce_gradients(value, seen)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.step += 1
            value /= targets
            losses.append(value)
            tokens += seen
            window_loss += value
            window_tokens += seen
            bar.update(1)
            if self.step % self.config.log_every == 0 or self.step == target:
                elapsed = max(time.perf_counter() - window_start, 1e-9)
                count = (self.step - 1) % self.config.log_every + 1
                bar.set_postfix(loss=f"{window_loss / count:.4f}", tok_s=f"{window_tokens / elapsed:.0f}",
                                lr=f"{self.scheduler.get_last_lr()[0]:.2e}")
                window_loss, window_tokens, window_start = 0.0, 0, time.perf_counter()
        bar.close()
        self.model.eval()
        return TrainLog(losses, tokens, time.perf_counter() - started)

    def _all_reduce_gradients(self, loss_sum: float, seen: int) -> tuple[float, int]:
        """Sums gradients (one flat buffer per dtype), the loss sum and the token count across ranks."""
        import torch.distributed as dist

        by_dtype: dict[torch.dtype, list[torch.nn.Parameter]] = {}
        for p in self.model.parameters():
            if p.requires_grad:
                by_dtype.setdefault(p.dtype, []).append(p)
        for params in by_dtype.values():
            flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
            dist.all_reduce(flat)
            offset = 0
            for p in params:  # views of the fresh buffer: no copy back
                p.grad = flat[offset:offset + p.numel()].view_as(p)
                offset += p.numel()
        totals = torch.tensor([loss_sum, float(seen)], dtype=torch.float64)
        dist.all_reduce(totals)
        return float(totals[0]), int(totals[1])

    def save_checkpoint(self, path: str | Path) -> Path:
        """Writes weights + config (safetensors), tokenizer, and the training state to ``path``.

        Under data parallelism rank 0 writes and every rank waits until it has.
        """
        path = Path(path)
        if self.world_size > 1:
            import torch.distributed as dist

            if self.rank == 0:
                self._write_checkpoint(path)
            dist.barrier()
            return path
        return self._write_checkpoint(path)

    def _write_checkpoint(self, path: Path) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(path, safe_serialization=True)
        self.tokenizer.save_pretrained(path)
        state = {
            "step": self.step,
            "stage": self.stage,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "python_rng": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
            "num_examples": [len(stage.examples) for stage in self.stages],
        }
        torch.save(state, path / STATE_FILE)
        (path / CONFIG_FILE).write_text(json.dumps(asdict(self.config), indent=2))
        return path

    @classmethod
    def from_checkpoint(cls, path: str | Path, examples: Sequence[SFTExample] | Sequence[Stage],
                        config: SFTConfig | None = None, **model_kwargs) -> SFTTrainer:
        """A trainer that continues a saved run on the same ``examples`` or stages (and, by default, config)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = Path(path)
        if not (path / STATE_FILE).is_file():
            raise FileNotFoundError(f"path: expected a checkpoint directory with {STATE_FILE}, got {str(path)!r}")
        if config is None:
            config = SFTConfig.from_dict(json.loads((path / CONFIG_FILE).read_text()))
        model = AutoModelForCausalLM.from_pretrained(path, **model_kwargs)
        tokenizer = AutoTokenizer.from_pretrained(path)
        trainer = cls(model, tokenizer, examples, config)
        state = torch.load(path / STATE_FILE, weights_only=True)
        saved = state["num_examples"]
        saved = [saved] if isinstance(saved, int) else list(saved)
        given = [len(stage.examples) for stage in trainer.stages]
        if saved != given:
            raise ValueError(f"examples: the checkpoint was trained on {saved} examples per stage, got {given}")
        trainer.optimizer.load_state_dict(state["optimizer"])
        trainer.scheduler.load_state_dict(state["scheduler"])
        trainer.step = state["step"]
        trainer._enter(state.get("stage", 0), state["epoch"], state["batch_in_epoch"])
        torch.set_rng_state(state["torch_rng"])
        version, internal, gauss = state["python_rng"]
        random.setstate((version, tuple(internal), gauss))
        return trainer
