"""The SFT trainer: response-only loss, bucketed batches, schedule, exact resume, config errors, any causal LM."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.optimization import get_cosine_with_min_lr_schedule_with_warmup

from pangu_core.config import ConfigError
from pangu_core.distill.sft import (
    IGNORE_INDEX,
    LEGACY_STATE_FILE,
    STATE_FILE,
    SFTConfig,
    SFTTrainer,
    Stage,
    collate,
    encode_pairs,
    epoch_batches,
    lr_factor,
)
from pangu_core.tasks.math_tasks import generate_math_tasks
from pangu_core.tasks.model import tiny_pangu
from pangu_core.tasks.teacher import teacher_response


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def examples(tokenizer):
    tasks = generate_math_tasks(10, levels=[1, 2], seed=3)
    pairs = [(t.prompt, mode, teacher_response(t, mode)) for t in tasks for mode in ("slow", "fast")]
    return encode_pairs(tokenizer, pairs)


def _config(**overrides):
    base = dict(max_steps=8, batch_size=4, learning_rate=3e-3, warmup_steps=2, bucket_batches=2, seed=1, log_every=2)
    return SFTConfig(**{**base, **overrides})


def test_labels_cover_the_response_only(tokenizer, examples):
    # The loss sees response tokens (including eos) and nothing of the prompt or the padding.
    batch = collate(examples[:3], tokenizer.pad_token_id)
    for row, example in enumerate(examples[:3]):
        labels = batch["labels"][row]
        kept = labels[labels != IGNORE_INDEX].tolist()
        assert kept == list(example.response_ids) and kept[-1] == tokenizer.eos_token_id
        assert batch["attention_mask"][row].sum() == len(example)
    prompt_text = tokenizer.decode(examples[0].prompt_ids)
    assert prompt_text.startswith("<|bos|><|user|>") and prompt_text.endswith("<|assistant|>")
    assert tokenizer.decode(examples[1].prompt_ids).endswith(" /no_think<|end|><|assistant|>")


def test_epoch_batches_cover_everything_once_and_bucket_by_length():
    lengths = [(i * 37) % 23 for i in range(50)]
    batches = epoch_batches(lengths, batch_size=4, bucket_batches=3, seed=0, epoch=0)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(50))
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) / len(batches)
    assert spread < 8  # random batches would spread about 15
    assert batches == epoch_batches(lengths, 4, 3, 0, 0) != epoch_batches(lengths, 4, 3, 0, 1)


def test_warmup_then_cosine():
    factors = [lr_factor(s, 10, 110, 0.1) for s in range(110)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert factors[60] == pytest.approx(0.55) and factors[-1] == pytest.approx(0.1, abs=1e-3)
    assert all(a >= b for a, b in zip(factors[9:], factors[10:]))


def _scheduled_lrs(scheduler, steps):
    lrs = []
    for _ in range(steps):
        lrs.append(scheduler.get_last_lr()[0])
        scheduler.optimizer.step()
        scheduler.step()
    return lrs


@pytest.mark.parametrize("warmup, steps, min_ratio", [(100, 4000, 0.1), (30, 600, 0.1), (0, 37, 0.0), (7, 7, 0.5)])
def test_trainer_learning_rates_follow_the_formula_and_match_transformers_after_warmup(tokenizer, examples, warmup,
                                                                                        steps, min_ratio):
    # The rates the trainer steps with are peak * ((s + 1) / warmup) during warmup and peak * (min +
    # (1 - min) * (1 + cos(pi * progress)) / 2) after it (the default and --quick runs were tuned on
    # them); after warmup they equal transformers' cosine-with-min-lr schedule exactly.
    config = _config(max_steps=steps, warmup_steps=warmup, min_lr_ratio=min_ratio, learning_rate=3e-3)
    trainer = SFTTrainer(tiny_pangu("nano", tokenizer, seed=0), tokenizer, examples, config)
    ours = _scheduled_lrs(trainer.scheduler, steps)

    def formula(s):
        if s < warmup:
            return 3e-3 * (s + 1) / warmup
        progress = (s - warmup) / max(1, steps - warmup)
        return 3e-3 * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))

    assert ours == pytest.approx([formula(s) for s in range(steps)], rel=1e-12, abs=0)
    reference = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=3e-3)
    theirs = _scheduled_lrs(get_cosine_with_min_lr_schedule_with_warmup(reference, warmup, steps,
                                                                          min_lr_rate=min_ratio), steps)
    assert ours[warmup:] == pytest.approx(theirs[warmup:], rel=1e-12, abs=0)


def test_resume_continues_bit_for_bit(tokenizer, examples, tmp_path):
    # Resume: 8 steps straight == 3 steps, checkpoint, new process-like trainer, 5 more steps
    # (crossing an epoch boundary: 20 examples / batch 4 = 5 batches per epoch).
    config = _config()
    straight = SFTTrainer(tiny_pangu("nano", tokenizer, seed=0), tokenizer, examples, config)
    straight.train(progress=False)

    first = SFTTrainer(tiny_pangu("nano", tokenizer, seed=0), tokenizer, examples, config)
    first.train(until_step=3, progress=False)
    first.save_checkpoint(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "model.safetensors").is_file() and (tmp_path / "ckpt" / "tokenizer.json").is_file()
    assert (tmp_path / "ckpt" / STATE_FILE).is_file() and not list(tmp_path.glob("ckpt.*"))
    torch.manual_seed(12345)  # whatever happens in between must not matter
    resumed = SFTTrainer.from_checkpoint(tmp_path / "ckpt", examples)
    assert resumed.step == 3 and resumed.config == config
    resumed.train(progress=False)
    for (name, p), (_, q) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(p, q), name


def _spy_batches(trainer):
    """Records the examples of every batch the trainer draws."""
    drawn, draw = [], trainer._next_batch

    def spy():
        indices = draw()
        drawn.append((trainer.stage, [trainer.examples[i] for i in indices]))
        return indices

    trainer._next_batch = spy
    return drawn


def test_curriculum_stages_feed_their_steps_and_resume_bit_for_bit(tokenizer, examples, tmp_path):
    # Stage 0 (fast answers) feeds steps 0-4, stage 1 (slow answers) steps 5-7; resuming from a
    # checkpoint taken on either side of the boundary continues like the straight run.
    fast, slow = examples[1::2], examples[0::2]
    stages = [Stage(5, fast), Stage(8, slow)]
    config = _config()
    straight = SFTTrainer(tiny_pangu("nano", tokenizer, seed=0), tokenizer, stages, config)
    drawn = _spy_batches(straight)
    straight.train(progress=False)
    assert [stage for stage, _ in drawn] == [0] * 5 + [1] * 3
    assert all(e in fast for _, batch in drawn[:5] for e in batch)
    assert all(e in slow for _, batch in drawn[5:] for e in batch)
    for stop in (4, 5, 6):
        first = SFTTrainer(tiny_pangu("nano", tokenizer, seed=0), tokenizer, stages, config)
        first.train(until_step=stop, progress=False)
        first.save_checkpoint(tmp_path / f"ckpt{stop}")
        resumed = SFTTrainer.from_checkpoint(tmp_path / f"ckpt{stop}", stages)
        resumed.train(progress=False)
        for (name, p), (_, q) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items()):
            assert torch.equal(p, q), (stop, name)
    with pytest.raises(ValueError, match="per stage"):
        SFTTrainer.from_checkpoint(tmp_path / "ckpt4", [Stage(5, fast), Stage(8, slow[:-1])])


@pytest.mark.parametrize("stages, message", [
    ([Stage(5, "x"), Stage(5, "x")], r"examples\[1\].until_step"),
    ([Stage(5, "x")], r"examples\[-1\].until_step: expected the last stage to end at max_steps=8"),
    ([Stage(9, "x")], r"examples\[0\].until_step"),
    ([Stage(3, []), Stage(8, "x")], r"examples\[0\].examples"),
    ([], r"examples: expected at least one"),
])
def test_bad_stages_are_named(tokenizer, examples, stages, message):
    stages = [Stage(s.until_step, examples[:4] if s.examples == "x" else s.examples) for s in stages]
    with pytest.raises(ValueError, match=message):
        SFTTrainer(tiny_pangu("nano", tokenizer, seed=0), tokenizer, stages, _config())


def test_loss_falls_and_trains_another_model_family(tokenizer, examples):
    # Any transformers causal LM works: a GPT-2 shaped model learns the same data.
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=256, n_embd=64, n_layer=2, n_head=2,
                                      pad_token_id=tokenizer.pad_token_id))
    for model in (tiny_pangu("nano", tokenizer, seed=0), gpt2):
        log = SFTTrainer(model, tokenizer, examples, _config(max_steps=30)).train(progress=False)
        assert sum(log.losses[-5:]) / 5 < 0.6 * sum(log.losses[:5]) / 5
        assert log.tokens > 0


def test_resume_reads_a_pickled_training_state_of_earlier_checkpoints(tokenizer, examples, tmp_path):
    # Checkpoints written before the state moved to safetensors (training_state.pt) still resume exactly.
    config = _config()
    straight = SFTTrainer(tiny_pangu("nano", tokenizer, seed=0), tokenizer, examples, config)
    straight.train(progress=False)
    first = SFTTrainer(tiny_pangu("nano", tokenizer, seed=0), tokenizer, examples, config)
    first.train(until_step=4, progress=False)
    first.save_checkpoint(tmp_path / "ckpt")
    state = {key: value for key, value in first._training_state().items() if key not in ("losses", "tokens")}
    torch.save(state, tmp_path / "ckpt" / LEGACY_STATE_FILE)
    (tmp_path / "ckpt" / STATE_FILE).unlink()
    resumed = SFTTrainer.from_checkpoint(tmp_path / "ckpt", examples)
    resumed.train(progress=False)
    for (name, p), (_, q) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(p, q), name


def test_a_new_checkpoint_replaces_the_old_one_and_never_a_foreign_folder(tokenizer, examples, tmp_path):
    # Saving again swaps in the new checkpoint whole; a folder that is not a checkpoint is left untouched.
    trainer = SFTTrainer(tiny_pangu("nano", tokenizer, seed=0), tokenizer, examples, _config())
    trainer.train(until_step=2, progress=False)
    trainer.save_checkpoint(tmp_path / "ckpt")
    trainer.train(until_step=3, progress=False)
    trainer.save_checkpoint(tmp_path / "ckpt")
    assert SFTTrainer.from_checkpoint(tmp_path / "ckpt", examples).step == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="not a checkpoint"):
        trainer.save_checkpoint(tmp_path / "mine")
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]


def test_every_step_callback_sees_the_mean_loss_since_the_last_call(tokenizer, examples):
    trainer = SFTTrainer(tiny_pangu("nano", tokenizer, seed=0), tokenizer, examples, _config())
    calls = []
    log = trainer.train(progress=False, every=3, on_every=lambda step, loss, seconds: calls.append((step, loss)))
    assert [step for step, _ in calls] == [3, 6, 8]
    assert calls[2][1] == pytest.approx(sum(log.losses[6:]) / 2)
    assert trainer.losses == log.losses and trainer.tokens == log.tokens


def test_config_errors_are_reported_together():
    # Every bad field at once, each as "field: expected ..., got ...".
    with pytest.raises(ConfigError) as error:
        SFTConfig(max_steps=0, batch_size=-1, learning_rate=0, betas=(0.9, 1.5), grad_clip=-1)
    assert sorted(p.split(":")[0] for p in error.value.problems) == [
        "batch_size", "betas[1]", "grad_clip", "learning_rate", "max_steps"]
    assert "betas[1]: expected a number in [0, 1), got 1.5" in error.value.problems


@pytest.mark.parametrize("values, problem", [
    ({"lr": 1.0}, "lr: unknown key; known: max_steps, batch_size"),
    ({"max_steps": 2.5}, "max_steps: expected an int, got 2.5"),
    ({"max_steps": True}, "max_steps: expected an int, got True"),
    ({"betas": [0.9]}, "betas: expected a list of 2 values, got [0.9] (list)"),
    ({"learning_rate": "fast"}, "learning_rate: expected a number, got 'fast' (str)"),
    ({"min_lr_ratio": 1.5}, "min_lr_ratio: expected a number in [0, 1], got 1.5"),
    ({"grad_clip": float("inf")}, "grad_clip: expected a finite number > 0, got inf"),
])
def test_config_error_names_the_field(values, problem):
    with pytest.raises(ConfigError) as error:
        SFTConfig.from_dict(values)
    assert any(p.startswith(problem) for p in error.value.problems), error.value.problems


def test_config_round_trips():
    config = _config(betas=(0.8, 0.95))
    assert SFTConfig.from_dict(config.to_dict()) == config and config.betas == (0.8, 0.95)


def test_trainer_errors_name_the_argument(tokenizer, examples, tmp_path):
    trainer = SFTTrainer(tiny_pangu("nano", tokenizer), tokenizer, examples, _config())
    with pytest.raises(ValueError, match="until_step"):
        trainer.train(until_step=99)
    with pytest.raises(ValueError, match="every: expected an int >= 0"):
        trainer.train(every=-1)
    with pytest.raises(ValueError, match="examples"):
        SFTTrainer(tiny_pangu("nano", tokenizer), tokenizer, [], _config())
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        SFTTrainer.from_checkpoint(tmp_path, examples)
    with pytest.raises(ValueError, match="max_length"):
        encode_pairs(tokenizer, [("1+1", "slow", "x" * 50)], max_length=20)


def test_the_package_re_exports_the_sft_names():
    import pangu_core.distill as distill

    assert distill.SFTTrainer is SFTTrainer and distill.SFTConfig is SFTConfig
    assert set(distill.__all__) <= set(dir(distill))
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        distill.nothing
