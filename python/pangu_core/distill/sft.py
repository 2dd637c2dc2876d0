"""Supervised fine-tuning of any transformers causal LM on (prompt, response) pairs, resumable exactly.

The loss is the causal-LM loss on response tokens only (prompt and padding are masked), the mean
over the whole batch's response tokens. Batches are bucketed by length: each epoch is a seeded
permutation cut into pools of ``bucket_batches`` batches, each pool sorted by length and cut into
batches, and the batch order shuffled again, so little compute goes to padding while the order stays
random. AdamW with linear warmup and cosine decay to ``min_lr_ratio`` of the peak, gradient clipping.

A checkpoint is a folder: the weights and model config (``model.safetensors``, ``config.json``,
written by ``save_pretrained``), the tokenizer, the SFT config (``sft_config.json``) and the
training state in ``training_state.safetensors`` (optimizer moments and the torch RNG state as
tensors; step, data position, schedule, Python RNG state and loss history as JSON in its metadata).
No pickle is read. Resuming one continues bit for bit where the straight run would have been.

Data parallel: when ``torch.distributed`` is initialised (gloo across local processes is enough),
the model is wrapped in ``torch.nn.parallel.DistributedDataParallel`` and each rank computes its
share of every batch. DDP averages the gradients over ranks, so each rank scales its summed loss by
``world_size / batch response tokens``: the step is that of the whole batch's mean loss, the same
step one process takes (up to the order of float sums). Rank 0 writes checkpoints.

Curriculum: instead of one list of examples the trainer takes a list of :class:`Stage`; each stage's
examples feed the steps up to its ``until_step``, with their own seeded epochs, so what the model sees
can change during training (easy levels first, hard ones later) while the optimizer and learning-rate
schedule run on unchanged.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from pangu_core.config import Config, expect
from pangu_core.distill.sft_data import (  # noqa: F401  (re-exported: the data side of SFT)
    IGNORE_INDEX,
    SFTExample,
    Stage,
    as_stages,
    collate,
    encode_pairs,
    epoch_batches,
)
from pangu_core.distill.training_state import load_training_state, save_training_state
STATE_FILE = "training_state.safetensors"
LEGACY_STATE_FILE = "training_state.pt"
CONFIG_FILE = "sft_config.json"


@dataclass(frozen=True)
class SFTConfig(Config):
    """Optimisation settings of one SFT run."""

    # Optimizer steps in total.
    max_steps: int = 1000
    # Sequences per step (the whole batch, shared out over data-parallel ranks).
    batch_size: int = 32
    # Peak AdamW learning rate.
    learning_rate: float = 1e-3
    # Final learning rate as a share of the peak (the cosine decay ends there).
    min_lr_ratio: float = 0.1
    # Steps of linear warmup (step s gets (s + 1) / warmup_steps of the peak).
    warmup_steps: int = 50
    # AdamW weight decay, matrices only (biases and norms are not decayed).
    weight_decay: float = 0.01
    # AdamW betas.
    betas: tuple[float, float] = (0.9, 0.98)
    # Gradient-norm clipping threshold.
    grad_clip: float = 1.0
    # Batches per length bucket: pools of batch_size * bucket_batches examples are sorted by length.
    bucket_batches: int = 16
    # Longest prompt + response in tokens.
    max_length: int = 512
    # Seed of the data order and of torch's and Python's global generators.
    seed: int = 0
    # Steps between progress-bar updates of loss and tokens/s.
    log_every: int = 10

    def validate(self) -> list[str]:
        problems: list[str] = []
        for name in ("max_steps", "batch_size", "bucket_batches", "max_length", "log_every"):
            expect(problems, getattr(self, name) >= 1, name, "an int >= 1", getattr(self, name))
        for name in ("warmup_steps", "seed"):
            expect(problems, getattr(self, name) >= 0, name, "an int >= 0", getattr(self, name))
        expect(problems, 0.0 < self.learning_rate <= 10.0, "learning_rate", "a number in (0, 10]", self.learning_rate)
        expect(problems, 0.0 <= self.min_lr_ratio <= 1.0, "min_lr_ratio", "a number in [0, 1]", self.min_lr_ratio)
        expect(problems, 0.0 <= self.weight_decay <= 10.0, "weight_decay", "a number in [0, 10]", self.weight_decay)
        expect(problems, 0.0 < self.grad_clip < math.inf, "grad_clip", "a finite number > 0", self.grad_clip)
        for i, beta in enumerate(self.betas):
            expect(problems, 0.0 <= beta < 1.0, f"betas[{i}]", "a number in [0, 1)", beta)
        return problems


def lr_factor(step: int, warmup_steps: int, max_steps: int, min_lr_ratio: float) -> float:
    """Multiplier of the peak learning rate at ``step``: linear warmup, then cosine to ``min_lr_ratio``.

    Warmup gives step s (counted from 0) ``(s + 1) / warmup_steps``, so no step runs at a learning
    rate of 0. From ``warmup_steps`` on it equals transformers'
    ``get_cosine_with_min_lr_schedule_with_warmup``; that schedule's warmup gives ``s / warmup_steps``
    (step 0 at 0), and its ``_lr_rate`` variant, whose warmup is this one, runs the decay a step ahead.
    """
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


@contextlib.contextmanager
def _quiet_transformers_bars() -> Iterator[None]:
    """Hides transformers' per-call bars ("Writing model shards", "Loading weights"): a run saves often."""
    from transformers.utils import logging as transformers_logging

    shown = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            transformers_logging.enable_progress_bar()


@dataclass
class TrainLog:
    """What a train() call did: loss per optimizer step, tokens seen (prompt + response), seconds."""

    losses: list[float]
    tokens: int
    seconds: float


class SFTTrainer:
    """Trains ``model`` on ``examples``; see the module docstring for what is saved and resumed.

    Construction seeds torch's and Python's global generators with ``config.seed`` (the run owns
    them: dropout or sampling inside the model must replay on resume). ``losses`` holds the loss of
    every step since the run began, across resumes; ``tokens`` the tokens seen.
    """

    def __init__(self, model, tokenizer, examples: Sequence[SFTExample] | Sequence[Stage],
                 config: SFTConfig = SFTConfig()):
        if not isinstance(config, SFTConfig):
            raise TypeError(f"config: expected SFTConfig, got {type(config).__name__}")
        if not isinstance(model, torch.nn.Module) or not hasattr(model, "save_pretrained"):
            raise TypeError(f"model: expected a transformers PreTrainedModel, got {type(model).__name__}")
        if tokenizer.pad_token_id is None:
            raise ValueError("tokenizer: expected a pad token (set tokenizer.pad_token)")
        self.model, self.tokenizer, self.config = model, tokenizer, config
        self.stages = as_stages(examples, config.max_steps)
        self._stage_lengths = [[len(e) for e in stage.examples] for stage in self.stages]
        self.rank, self.world_size = _world()
        # What the forward pass runs through: under data parallelism the DDP wrapper, which starts
        # every rank from rank 0's weights and averages gradients during backward.
        self._forward_model = model
        if self.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            self._forward_model = DistributedDataParallel(model, gradient_as_bucket_view=True)
        decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim >= 2]
        no_decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim < 2]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=config.learning_rate, betas=config.betas,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, config.warmup_steps, config.max_steps, config.min_lr_ratio)
        )
        self.step, self.losses, self.tokens = 0, [], 0
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

    def train(self, until_step: int | None = None, progress: bool = True, every: int = 0,
              on_every: Callable[[int, float, float], None] | None = None) -> TrainLog:
        """Runs optimizer steps up to ``until_step`` (default: config.max_steps).

        With ``every`` > 0, ``on_every(step, mean loss since the previous call, seconds since train()
        began)`` runs on every rank after each ``every``-th step and after the last one (a place to
        log or to save a checkpoint, which under data parallelism all ranks must call).
        """
        target = self.config.max_steps if until_step is None else until_step
        if isinstance(target, bool) or not isinstance(target, int) or not self.step <= target <= self.config.max_steps:
            raise ValueError(f"until_step: expected an int in [{self.step}, {self.config.max_steps}], got {until_step!r}")
        if isinstance(every, bool) or not isinstance(every, int) or every < 0:
            raise ValueError(f"every: expected an int >= 0, got {every!r}")
        self._forward_model.train()
        device = next(self.model.parameters()).device
        first_step, tokens_before, started = self.step, self.tokens, time.perf_counter()
        bar = tqdm(total=target - self.step, desc="sft", disable=not progress or self.rank != 0, dynamic_ncols=True)
        window_tokens, window_start, reported = 0, time.perf_counter(), self.step
        while self.step < target:
            loss, seen = self._train_step(self._next_batch(), device)
            self.step += 1
            self.losses.append(loss)
            self.tokens += seen
            window_tokens += seen
            bar.update(1)
            if self.step % self.config.log_every == 0 or self.step == target:
                window = self.losses[-((self.step - 1) % self.config.log_every + 1):]
                elapsed = max(time.perf_counter() - window_start, 1e-9)
                bar.set_postfix(loss=f"{sum(window) / len(window):.4f}", tok_s=f"{window_tokens / elapsed:.0f}",
                                lr=f"{self.scheduler.get_last_lr()[0]:.2e}")
                window_tokens, window_start = 0, time.perf_counter()
            if on_every is not None and every and (self.step % every == 0 or self.step == target):
                recent = self.losses[-(self.step - reported):]
                on_every(self.step, sum(recent) / len(recent), time.perf_counter() - started)
                reported = self.step
        bar.close()
        self.model.eval()
        return TrainLog(self.losses[len(self.losses) - (self.step - first_step):], self.tokens - tokens_before,
                        time.perf_counter() - started)

    def _train_step(self, indices: list[int], device: torch.device) -> tuple[float, int]:
        """One optimizer step on the batch ``indices``: (its mean response loss, its tokens)."""
        # The loss is the mean over the whole batch's response tokens, on every rank.
        targets = max(1, sum(len(self.examples[i].response_ids) - (not self.examples[i].prompt_ids)
                             for i in indices))
        mine = indices[self.rank::self.world_size]
        # A rank with no share of a small batch still joins DDP's gradient average, with a zero weight.
        batch = collate([self.examples[i] for i in (mine or indices[:1])], self.tokenizer.pad_token_id)
        batch = {k: v.to(device) for k, v in batch.items()}
        loss_sum = response_loss_sum(self._forward_model, batch)
        loss = loss_sum / targets
        if self.world_size > 1:
            # DDP averages the ranks' gradients; times world_size, that average is the batch mean's gradient.
            loss = loss * (self.world_size if mine else 0.0)
        loss.backward()
        value = float(loss_sum.detach()) if mine else 0.0
        if self.world_size > 1:
            import torch.distributed as dist

            total = torch.tensor([value], dtype=torch.float64)
            dist.all_reduce(total)
            value = float(total[0])
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return value / targets, sum(len(self.examples[i]) for i in indices)

    def save_checkpoint(self, path: str | Path) -> Path:
        """Writes weights + model config (safetensors), tokenizer, SFT config and training state to ``path``.

        The folder is written beside ``path`` and then swapped in, so an interrupted save leaves the
        previous checkpoint whole. ``path`` must be absent, empty or a checkpoint. Under data
        parallelism rank 0 writes and every rank waits until it has.
        """
        path = Path(path)
        if self.world_size > 1:
            import torch.distributed as dist

            error = None
            if self.rank == 0:
                try:
                    self._write_checkpoint(path)
                except (OSError, ValueError) as caught:
                    error = caught
            dist.barrier()
            if error is not None:
                raise error
            return path
        return self._write_checkpoint(path)

    def _write_checkpoint(self, path: Path) -> Path:
        if path.exists() and not (path / STATE_FILE).is_file() and not (path / LEGACY_STATE_FILE).is_file():
            if not path.is_dir() or any(path.iterdir()):
                raise FileExistsError(f"path: {str(path)!r} exists and is not a checkpoint; not replacing it")
        partial, old = path.with_name(path.name + ".partial"), path.with_name(path.name + ".old")
        for leftover in (partial, old):
            if leftover.exists():
                shutil.rmtree(leftover)
        partial.mkdir(parents=True)
        with _quiet_transformers_bars():
            self.model.save_pretrained(partial, safe_serialization=True)
        self.tokenizer.save_pretrained(partial)
        (partial / CONFIG_FILE).write_text(json.dumps(self.config.to_dict(), indent=2) + "\n")
        save_training_state(partial / STATE_FILE, self._training_state())
        if path.exists():
            path.rename(old)
        partial.rename(path)
        if old.exists():
            shutil.rmtree(old)
        return path

    def _training_state(self) -> dict:
        return {
            "step": self.step,
            "stage": self.stage,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "python_rng": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
            "num_examples": [len(stage.examples) for stage in self.stages],
            "losses": list(self.losses),
            "tokens": self.tokens,
        }

    @classmethod
    def from_checkpoint(cls, path: str | Path, examples: Sequence[SFTExample] | Sequence[Stage],
                        config: SFTConfig | None = None, **model_kwargs) -> SFTTrainer:
        """A trainer that continues a saved run on the same ``examples`` or stages (and, by default, config).

        Reads checkpoints of this version and those whose state is a ``training_state.pt``.
        """
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = Path(path)
        if (path / STATE_FILE).is_file():
            state = load_training_state(path / STATE_FILE)
        elif (path / LEGACY_STATE_FILE).is_file():
            state = torch.load(path / LEGACY_STATE_FILE, weights_only=True)
        else:
            raise FileNotFoundError(f"path: expected a checkpoint directory with {STATE_FILE}, got {str(path)!r}")
        if config is None:
            config = SFTConfig.from_dict(json.loads((path / CONFIG_FILE).read_text()))
        with _quiet_transformers_bars():
            model = AutoModelForCausalLM.from_pretrained(path, **model_kwargs)
        tokenizer = AutoTokenizer.from_pretrained(path)
        trainer = cls(model, tokenizer, examples, config)
        saved = state["num_examples"]
        saved = [saved] if isinstance(saved, int) else list(saved)
        given = [len(stage.examples) for stage in trainer.stages]
        if saved != given:
            raise ValueError(f"examples: the checkpoint was trained on {saved} examples per stage, got {given}")
        trainer.optimizer.load_state_dict(state["optimizer"])
        trainer.scheduler.load_state_dict(state["scheduler"])
        trainer.step = state["step"]
        trainer.losses, trainer.tokens = list(state.get("losses", [])), state.get("tokens", 0)
        trainer._enter(state.get("stage", 0), state["epoch"], state["batch_in_epoch"])
        torch.set_rng_state(state["torch_rng"])
        version, internal, gauss = state["python_rng"]
        random.setstate((version, tuple(internal), gauss))
        return trainer

