"""GRPO loss maths against hand-computed float64 values, gradient checks and the error paths."""

from __future__ import annotations

import math

import pytest
import torch

from pangu_core.config import ConfigError
from pangu_core.rl.grpo import GRPOConfig, grpo_advantages, k3_kl, policy_loss, token_log_probs, token_mean

pytestmark = pytest.mark.usefixtures("one_torch_thread")

F64 = torch.float64

# A batch of 3 responses x 3 tokens chosen so that every branch of the clipped loss shows up once
# (A > 0 inside the clip, above it and below it; A < 0 on policy, below the clip and past the dual
# clip); row 2 has one response token and garbage at its padded positions.
LOG_PROBS = [[-1.0, -0.5, -2.0], [-0.3, -1.2, -0.7], [-0.4, 0.0, 0.0]]
OLD = [[-1.1, -0.9, -1.5], [-0.3, -0.2, -2.0], [-0.4, -50.0, 3.0]]
MASK = [[1, 1, 1], [1, 1, 1], [1, 0, 0]]
ADV = [1.5, -0.8, 0.5]


def batch():
    log_probs = torch.tensor(LOG_PROBS, dtype=F64, requires_grad=True)
    return log_probs, torch.tensor(OLD, dtype=F64), torch.tensor(ADV, dtype=F64), torch.tensor(MASK)


def hand_token_losses(clip_high=0.2, dual=True):
    """The 7 response-token losses, each branch written out."""
    e = math.exp
    return [
        -1.5 * e(0.1),                       # r = 1.105 inside [0.8, 1 + clip_high]
        -1.5 * min(e(0.4), 1 + clip_high),   # r = 1.492 above the clip, A > 0: clipped
        -1.5 * e(-0.5),                      # r = 0.607 below the clip, A > 0: max keeps the unclipped
        0.8 * 1.0,                           # r = 1, A < 0
        0.8 * 0.8,                           # r = 0.368 below the clip, A < 0: clipped at 0.8
        0.8 * 3.0 if dual else 0.8 * e(1.3),  # r = 3.669, A < 0: 2.935 > c |A| = 2.4, dual clip
        -0.5 * 1.0,                          # row 2, r = 1
    ]


# The loss, every metric and the gradient match the formula computed by hand, token by token.
def test_policy_loss_matches_hand_computation():
    log_probs, old, adv, mask = batch()
    loss, metrics = policy_loss(log_probs, old, adv, mask)
    assert loss.dtype == F64
    assert loss.item() == pytest.approx(sum(hand_token_losses()) / 7, rel=1e-12)
    assert metrics["policy_loss"] == pytest.approx(loss.item(), rel=1e-12)
    assert metrics["clip_fraction"] == pytest.approx(2 / 7)
    assert metrics["dual_clip_fraction"] == pytest.approx(1 / 7)
    e = math.exp
    assert metrics["ratio_mean"] == pytest.approx((e(0.1) + e(0.4) + e(-0.5) + 1 + e(-1) + e(1.3) + 1) / 7, rel=1e-12)
    assert metrics["ratio_max"] == pytest.approx(e(1.3), rel=1e-12)
    assert metrics["approx_kl"] == pytest.approx((-0.1 - 0.4 + 0.5 + 0 + 1.0 - 1.3 + 0) / 7, rel=1e-12)
    assert metrics["tokens"] == 7
    assert "kl" not in metrics and "weight_mean" not in metrics
    loss.backward()
    # d loss / d log pi = -A r / N where the unclipped term is active, 0 where a clip holds it.
    expected = torch.tensor([[-1.5 * e(0.1) / 7, 0.0, -1.5 * e(-0.5) / 7],
                             [0.8 / 7, 0.0, 0.0],
                             [-0.5 / 7, 0.0, 0.0]], dtype=F64)
    torch.testing.assert_close(log_probs.grad, expected, rtol=1e-12, atol=1e-15)


# Separate clips: only the upper one moves the A > 0 token above the clip; dual clip off lets the
# A < 0 loss grow with the ratio.
def test_clip_high_and_dual_clip_off():
    log_probs, old, adv, mask = batch()
    loss, _ = policy_loss(log_probs, old, adv, mask, GRPOConfig(clip_high=0.28))
    assert loss.item() == pytest.approx(sum(hand_token_losses(clip_high=0.28)) / 7, rel=1e-12)
    loss, metrics = policy_loss(log_probs, old, adv, mask, GRPOConfig(dual_clip=None))
    assert loss.item() == pytest.approx(sum(hand_token_losses(dual=False)) / 7, rel=1e-12)
    assert metrics["dual_clip_fraction"] == 0.0


# The dual clip bounds a negative-advantage token's loss by c |A| however large the ratio, with no gradient.
def test_dual_clip_bounds_the_loss():
    for log_ratio in (1.2, 5.0, 19.0, 400.0):
        log_probs = torch.tensor([[log_ratio - 1.0]], dtype=F64, requires_grad=True)
        loss, metrics = policy_loss(log_probs, torch.tensor([[-1.0]], dtype=F64), torch.tensor([-2.0], dtype=F64),
                                    torch.tensor([[True]]))
        assert loss.item() == pytest.approx(2.0 * 3.0, rel=1e-12)
        assert metrics["dual_clip_fraction"] == 1.0
        loss.backward()
        assert float(log_probs.grad) == 0.0


# On policy (old = current) the loss is -token mean of A and its gradient -A / N: plain REINFORCE.
def test_on_policy_loss_is_reinforce():
    log_probs = torch.tensor([[-0.7, -1.1], [-2.0, -0.1]], dtype=F64, requires_grad=True)
    adv = torch.tensor([[0.3, 0.3], [-1.2, -1.2]], dtype=F64)
    mask = torch.tensor([[True, True], [True, False]])
    loss, metrics = policy_loss(log_probs, log_probs.detach().clone(), adv, mask)
    assert loss.item() == pytest.approx(-(0.3 + 0.3 - 1.2) / 3, rel=1e-12)
    assert metrics["clip_fraction"] == 0.0 and metrics["ratio_mean"] == 1.0
    loss.backward()
    torch.testing.assert_close(log_probs.grad, torch.tensor([[-0.1, -0.1], [0.4, 0.0]], dtype=F64), rtol=1e-12, atol=0)


# Group advantages with the unbiased std, batch std scaling, and no scaling, against hand values.
def test_grpo_advantages_hand_values():
    rewards = [[1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 1.0], [2.0, 2.0, 2.0, 2.0]]
    group = grpo_advantages(rewards)
    std0 = math.sqrt((4 * 0.5 ** 2) / 3)                   # unbiased: divide by G - 1 = 3
    std1 = math.sqrt((3 * 0.25 ** 2 + 0.75 ** 2) / 3)      # = 0.5
    expected = [[0.5 / (std0 + 1e-6), -0.5 / (std0 + 1e-6), -0.5 / (std0 + 1e-6), 0.5 / (std0 + 1e-6)],
                [-0.25 / (std1 + 1e-6)] * 3 + [0.75 / (std1 + 1e-6)],
                [0.0] * 4]                                  # equal rewards: no signal
    assert group.dtype == F64
    torch.testing.assert_close(group, torch.tensor(expected, dtype=F64), rtol=1e-12, atol=0)
    mean = 11 / 12                                          # three 1s, five 0s, four 2s
    batch_std = math.sqrt((3 * (1 - mean) ** 2 + 5 * mean ** 2 + 4 * (2 - mean) ** 2) / 11)
    centred = [[0.5, -0.5, -0.5, 0.5], [-0.25, -0.25, -0.25, 0.75], [0.0] * 4]
    torch.testing.assert_close(grpo_advantages(rewards, scale="batch"),
                               torch.tensor(centred, dtype=F64) / (batch_std + 1e-6), rtol=1e-12, atol=0)
    torch.testing.assert_close(grpo_advantages(rewards, scale="none"), torch.tensor(centred, dtype=F64))
    as_float32 = grpo_advantages(torch.tensor(rewards, dtype=torch.float32), eps=0.5)
    assert as_float32.dtype == torch.float32
    assert float(as_float32[1, 3]) == pytest.approx(0.75 / 1.0, rel=1e-6)


# log softmax at the target, with temperature, masked positions 0 (padding ids allowed there).
def test_token_log_probs_hand_values():
    logits = torch.tensor([[[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]], dtype=F64, requires_grad=True)
    targets = torch.tensor([[2, 1]])
    e = math.exp
    got = token_log_probs(logits, targets)
    torch.testing.assert_close(got, torch.tensor([[3 - math.log(e(1) + e(2) + e(3)), -math.log(3)]], dtype=F64))
    hot = token_log_probs(logits, targets, temperature=2.0)
    assert hot[0, 0].item() == pytest.approx(1.5 - math.log(e(0.5) + e(1.0) + e(1.5)), rel=1e-12)
    masked = token_log_probs(logits, torch.tensor([[2, -100]]), torch.tensor([[1, 0]]))
    assert masked[0, 1].item() == 0.0
    masked.sum().backward()
    assert logits.grad[0, 1].abs().sum() == 0.0   # nothing flows from a padded position
    half = token_log_probs(logits.detach().to(torch.bfloat16), targets)
    assert half.dtype == torch.float32             # low precision logits are upcast


# k3 = exp(d) - d - 1 with d = log pi_ref - log pi; the KL term adds kl_coef * its token mean.
def test_k3_kl_and_kl_term():
    log_probs, old, adv, mask = batch()
    shift = torch.tensor([[0.1, -0.2, 0.0], [0.5, 0.0, -1.0], [0.3, 9.0, 9.0]], dtype=F64)
    ref = log_probs.detach() + shift
    per_token = k3_kl(log_probs.detach(), ref)
    assert float(per_token[0, 0]) == pytest.approx(math.exp(0.1) - 0.1 - 1, rel=1e-12)
    assert float(per_token[1, 2]) == pytest.approx(math.exp(-1.0) + 1.0 - 1, rel=1e-12)
    assert float(per_token.min()) >= 0.0
    d = [0.1, -0.2, 0.0, 0.5, 0.0, -1.0, 0.3]   # response tokens only
    kl_mean = sum(math.exp(x) - x - 1 for x in d) / 7
    loss, metrics = policy_loss(log_probs, old, adv, mask, GRPOConfig(kl_coef=0.1), ref_log_probs=ref)
    assert loss.item() == pytest.approx(sum(hand_token_losses()) / 7 + 0.1 * kl_mean, rel=1e-12)
    assert metrics["kl"] == pytest.approx(kl_mean, rel=1e-12)
    assert metrics["policy_loss"] == pytest.approx(sum(hand_token_losses()) / 7, rel=1e-12)
    # Off by default: the reference is then measured, not trained against.
    loss, metrics = policy_loss(log_probs, old, adv, mask, ref_log_probs=ref)
    assert loss.item() == pytest.approx(sum(hand_token_losses()) / 7, rel=1e-12)
    assert metrics["kl"] == pytest.approx(kl_mean, rel=1e-12)


# Behaviour log-probs such that pi_old / pi_behav is exp of these per token (row 0's last is 7.39).
BEHAVIOUR_SHIFT = [[0.2, -0.1, 2.0], [0.0, 0.5, -0.3], [0.1, 0.0, 0.0]]


# Decoupled: r against the proximal (old) policy, times w = pi_old / pi_behav, tokens with w > cap left
# out (they still count in the token mean) and given no gradient.
def test_decoupled_correction_hand_values():
    log_probs, old, adv, mask = batch()
    behaviour = old - torch.tensor(BEHAVIOUR_SHIFT, dtype=F64)
    weights = [math.exp(0.2), math.exp(-0.1), 0.0, 1.0, math.exp(0.5), math.exp(-0.3), math.exp(0.1)]
    expected = sum(w * l for w, l in zip(weights, hand_token_losses())) / 7
    loss, metrics = policy_loss(log_probs, old, adv, mask, GRPOConfig(correction="decoupled"),
                                behaviour_log_probs=behaviour)
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    assert metrics["capped_fraction"] == pytest.approx(1 / 7)
    assert metrics["weight_mean"] == pytest.approx(
        (math.exp(0.2) + math.exp(-0.1) + math.exp(2.0) + 1 + math.exp(0.5) + math.exp(-0.3) + math.exp(0.1)) / 7)
    loss.backward()
    assert float(log_probs.grad[0, 2]) == 0.0            # filtered token
    assert float(log_probs.grad[0, 0]) == pytest.approx(-1.5 * math.exp(0.1) * math.exp(0.2) / 7, rel=1e-12)
    # No cap keeps the token with its full weight.
    loss, _ = policy_loss(log_probs, old, adv, mask, GRPOConfig(correction="decoupled", behaviour_cap=None),
                          behaviour_log_probs=behaviour)
    weights[2] = math.exp(2.0)
    assert loss.item() == pytest.approx(sum(w * l for w, l in zip(weights, hand_token_losses())) / 7, rel=1e-12)


# Truncated importance sampling: the weight min(pi_old / pi_behav, C) multiplies every token's loss.
def test_tis_correction_hand_values():
    log_probs, old, adv, mask = batch()
    behaviour = old - torch.tensor(BEHAVIOUR_SHIFT, dtype=F64)
    weights = [math.exp(0.2), math.exp(-0.1), 2.0, 1.0, math.exp(0.5), math.exp(-0.3), math.exp(0.1)]
    loss, metrics = policy_loss(log_probs, old, adv, mask, GRPOConfig(correction="tis"), behaviour_log_probs=behaviour)
    assert loss.item() == pytest.approx(sum(w * l for w, l in zip(weights, hand_token_losses())) / 7, rel=1e-12)
    assert metrics["capped_fraction"] == pytest.approx(1 / 7)
    loss.backward()
    assert float(log_probs.grad[0, 2]) == pytest.approx(-1.5 * math.exp(-0.5) * 2.0 / 7, rel=1e-12)
    # With behaviour = old every weight is 1: the same loss as no correction.
    plain, _ = policy_loss(log_probs, old, adv, mask)
    same, _ = policy_loss(log_probs, old, adv, mask, GRPOConfig(correction="tis"), behaviour_log_probs=old)
    assert same.item() == pytest.approx(plain.item(), rel=1e-12)


# Micro-batches with the whole batch's token count add up to the whole batch's loss.
def test_num_tokens_splits_add_up():
    log_probs, old, adv, mask = batch()
    whole, _ = policy_loss(log_probs, old, adv, mask)
    first, _ = policy_loss(log_probs[:1], old[:1], adv[:1], mask[:1], num_tokens=7)
    rest, _ = policy_loss(log_probs[1:], old[1:], adv[1:], mask[1:], num_tokens=7)
    assert (first + rest).item() == pytest.approx(whole.item(), rel=1e-12)
    assert float(token_mean(torch.ones(2, 2), torch.tensor([[1, 1], [0, 1]]))) == 1.0


# Low-precision log-probs are upcast: the loss is float32 and equals the float32 computation.
def test_bfloat16_log_probs_give_a_float32_loss():
    log_probs, old, adv, mask = batch()
    half = log_probs.detach().to(torch.bfloat16).requires_grad_()
    loss, _ = policy_loss(half, old.to(torch.bfloat16), adv, mask)
    assert loss.dtype == torch.float32
    reference, _ = policy_loss(half.detach().float(), old.to(torch.bfloat16).float(), adv, mask)
    assert loss.item() == pytest.approx(reference.item(), rel=1e-6)
    loss.backward()
    assert half.grad.dtype == torch.bfloat16


# Bad input names the argument and says what was expected.
def test_error_paths_name_the_argument():
    log_probs, old, adv, mask = batch()
    with pytest.raises(ValueError, match=r"old_log_probs: expected shape \(3, 3\) like log_probs, got \(3, 2\)"):
        policy_loss(log_probs, old[:, :2], adv, mask)
    with pytest.raises(ValueError, match=r"advantages: expected shape \(3,\) or \(3, 3\), got \(2,\)"):
        policy_loss(log_probs, old, adv[:2], mask)
    with pytest.raises(ValueError, match=r"response_mask: expected shape \(3, 3\), got \(3, 1\)"):
        policy_loss(log_probs, old, adv, mask[:, :1])
    with pytest.raises(ValueError, match="response_mask: expected a bool or 0/1"):
        policy_loss(log_probs, old, adv, mask * 2)
    with pytest.raises(ValueError, match="response_mask: expected at least one response token"):
        policy_loss(log_probs, old, adv, torch.zeros_like(mask))
    with pytest.raises(ValueError, match="behaviour_log_probs: required by config.correction='decoupled'"):
        policy_loss(log_probs, old, adv, mask, GRPOConfig(correction="decoupled"))
    with pytest.raises(ValueError, match="behaviour_log_probs: given, but config.correction is 'none'"):
        policy_loss(log_probs, old, adv, mask, behaviour_log_probs=old)
    with pytest.raises(ValueError, match=r"behaviour_log_probs: expected shape \(3, 3\)"):
        policy_loss(log_probs, old, adv, mask, GRPOConfig(correction="tis"), behaviour_log_probs=old[:1])
    with pytest.raises(ValueError, match="ref_log_probs: required by config.kl_coef=0.1"):
        policy_loss(log_probs, old, adv, mask, GRPOConfig(kl_coef=0.1))
    with pytest.raises(ValueError, match="advantages: expected finite values"):
        policy_loss(log_probs, old, torch.tensor([1.0, math.nan, 0.0], dtype=F64), mask)
    with pytest.raises(TypeError, match="old_log_probs: expected a floating tensor"):
        policy_loss(log_probs, old.long(), adv, mask)
    with pytest.raises(TypeError, match="config: expected GRPOConfig, got dict"):
        policy_loss(log_probs, old, adv, mask, {"clip_low": 0.2})
    with pytest.raises(ValueError, match=r"rewards: expected at least one group of at least 2 responses, got shape \(2, 1\)"):
        grpo_advantages([[1.0], [0.0]])
    with pytest.raises(ValueError, match=r"rewards: expected shape \(prompts, group size\), got \(4,\)"):
        grpo_advantages([1.0, 0.0, 1.0, 0.0])
    with pytest.raises(ValueError, match="scale: unknown 'rank'; known: group, batch, none"):
        grpo_advantages([[1.0, 0.0]], scale="rank")
    with pytest.raises(ValueError, match="rewards: expected finite values"):
        grpo_advantages([[1.0, math.inf]])
    with pytest.raises(ValueError, match=r"target_ids: expected shape \(1, 2\) like logits' first two, got \(1, 3\)"):
        token_log_probs(torch.zeros(1, 2, 3), torch.zeros(1, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"target_ids: expected ids in \[0, 3\)"):
        token_log_probs(torch.zeros(1, 2, 3), torch.tensor([[0, 3]]))
    with pytest.raises(TypeError, match="target_ids: expected an integer tensor"):
        token_log_probs(torch.zeros(1, 2, 3), torch.zeros(1, 2))
    with pytest.raises(ValueError, match="temperature: expected a finite number > 0, got 0"):
        token_log_probs(torch.zeros(1, 2, 3), torch.zeros(1, 2, dtype=torch.long), temperature=0)


# The config validates every rule at once, refuses unknown keys and wrong types, and round-trips.
def test_grpo_config_checks_and_round_trip(tmp_path):
    config = GRPOConfig(clip_high=0.28, correction="decoupled", behaviour_cap=None, kl_coef=0.01)
    assert GRPOConfig.from_dict(config.to_dict()) == config
    path = tmp_path / "grpo.yaml"
    config.to_yaml(path)
    assert GRPOConfig.from_yaml(path) == config
    with pytest.raises(ConfigError) as caught:
        GRPOConfig(clip_low=1.0, clip_high=-0.1, dual_clip=1.0, kl_coef=-1.0, behaviour_cap=0.5, tis_cap=0.0,
                   advantage_eps=0.0)
    assert caught.value.problems == [
        "advantage_eps: expected a finite number > 0, got 0.0",
        "clip_low: expected a number in [0, 1), got 1.0",
        "clip_high: expected a finite number >= 0, got -0.1",
        "dual_clip: expected None or a finite number > 1, got 1.0",
        "kl_coef: expected a finite number >= 0, got -1.0",
        "behaviour_cap: expected None or a finite number > 1, got 0.5",
        "tis_cap: expected a finite number > 0, got 0.0",
    ]
    with pytest.raises(ConfigError, match="clip_ratio: unknown key; known: advantage_scale"):
        GRPOConfig.from_dict({"clip_ratio": 0.2})
    with pytest.raises(ConfigError, match="correction: expected one of"):
        GRPOConfig(correction="vtrace")
    with pytest.raises(ConfigError, match="dual_clip: expected"):
        GRPOConfig(dual_clip="3")
