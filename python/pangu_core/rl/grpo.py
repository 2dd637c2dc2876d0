"""GRPO loss maths as pure functions on torch tensors: advantages, token log-probs, the clipped loss.

One learner step on a batch of B responses padded to T tokens::

    advantages = grpo_advantages(rewards)                     # (P, G) rewards -> (P, G); flatten to (B,)
    log_probs = token_log_probs(logits, targets, mask)         # (B, T), with gradient
    loss, metrics = policy_loss(log_probs, old_log_probs, advantages.flatten(), mask, config)

The per-token loss, with ratio r = pi / pi_old and advantage A (one value per response, or per token)::

    l = max(-A r, -A clip(r, 1 - clip_low, 1 + clip_high))     # PPO clipped surrogate
    l = min(l, -c A)   where A < 0                             # dual clip: at most c |A|
    l = w l                                                    # off-policy weight (1 on policy)
    loss = sum(l over response tokens) / (response tokens in the batch)    # token mean
         + kl_coef * token mean of k3(pi, pi_ref)              # only with kl_coef > 0

Stale data (a rollout sampled by weights older than the learner's) has three log-probs per token:
``behaviour`` (the weights that sampled it, returned by the generator), ``old`` (the learner's weights
before this update, also called proximal) and the current ones (with gradient). ``correction`` says
what to do with them:

- ``"none"``: r = pi / pi_old and w = 1. ``old_log_probs`` are then usually the behaviour log-probs
  (exact on policy, where sampler and learner hold the same weights).
- ``"decoupled"`` (the decoupled PPO objective of AReaL, Fu et al. 2025): r = pi / pi_prox clips the
  step around the learner's own recent weights, and w = pi_prox / pi_behav corrects for the sampler.
  Tokens whose w exceeds ``behaviour_cap`` are left out of the loss (w = 0; they still count in the
  token mean), as AReaL's ``behav_imp_weight_cap`` does.
- ``"tis"`` (truncated importance sampling, as in verl and ms-swift): the same r, and the weight
  w = min(pi_old / pi_behav, tis_cap) truncated instead of filtered.

Defaults and where they come from: clip 0.2 / 0.2 (PPO's 0.2, the default of TRL's GRPOTrainer and
verl; DAPO's "clip higher" raises the upper one to 0.28, set ``clip_high=0.28`` for it); dual clip
c = 3 (Ye et al. 2020, verl's ``clip_ratio_c``); no KL term (TRL's default beta = 0 since 2025; the
k3 estimator of Schulman's note when on); group std scaling with the unbiased std and eps 1e-6
(torch.std as TRL and verl use it); token-mean aggregation (DAPO, verl's ``token-mean``);
behaviour cap 5 (an AReaL example setting; AReaL leaves it off by default) and TIS cap 2
(ms-swift's default threshold). The Pangu Embedded paper does not give its RL hyper-parameters.

Log-ratios are clamped to [-20, 20] before ``exp`` so that a wild token cannot overflow to inf.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch

from pangu_core.config import Config, expect, is_number

__all__ = [
    "ADVANTAGE_SCALES", "CORRECTIONS", "GRPOConfig", "grpo_advantages", "token_log_probs", "token_mean",
    "k3_kl", "policy_loss",
]

ADVANTAGE_SCALES = ("group", "batch", "none")
CORRECTIONS = ("none", "decoupled", "tis")
# exp(20) ~ 5e8: far beyond any clip, and finite in float16.
_LOG_RATIO_LIMIT = 20.0


@dataclass(frozen=True)
class GRPOConfig(Config):
    """Settings of the GRPO loss (see the module docstring for what each does and its source)."""

    # Advantage scaling after subtracting the group mean: "group" (each group's unbiased reward
    # std), "batch" (the unbiased std of every reward in the batch) or "none" (mean only).
    advantage_scale: Literal["group", "batch", "none"] = "group"
    # Added to the std before dividing (> 0).
    advantage_eps: float = 1e-6
    # Lower ratio clip: r below 1 - clip_low stops pushing the token down (0 <= clip_low < 1).
    clip_low: float = 0.2
    # Upper ratio clip: r above 1 + clip_high stops pushing the token up (>= 0; 0.28 = "clip higher").
    clip_high: float = 0.2
    # Dual clip c > 1: a token with negative advantage loses at most c * |A|; None turns it off.
    dual_clip: float | None = 3.0
    # Weight of the k3 KL penalty against a frozen reference (>= 0; 0 = off).
    kl_coef: float = 0.0
    # Off-policy correction for stale rollouts: "none", "decoupled" or "tis".
    correction: Literal["none", "decoupled", "tis"] = "none"
    # decoupled: tokens with pi_old / pi_behav above this are left out (> 1); None keeps every token.
    behaviour_cap: float | None = 5.0
    # tis: cap C of the weight min(pi_old / pi_behav, C) (> 0).
    tis_cap: float = 2.0

    def validate(self) -> list[str]:
        problems: list[str] = []
        expect(problems, _finite(self.advantage_eps) and self.advantage_eps > 0, "advantage_eps",
               "a finite number > 0", self.advantage_eps)
        expect(problems, _finite(self.clip_low) and 0 <= self.clip_low < 1, "clip_low", "a number in [0, 1)",
               self.clip_low)
        expect(problems, _finite(self.clip_high) and self.clip_high >= 0, "clip_high", "a finite number >= 0",
               self.clip_high)
        expect(problems, self.dual_clip is None or (_finite(self.dual_clip) and self.dual_clip > 1), "dual_clip",
               "None or a finite number > 1", self.dual_clip)
        expect(problems, _finite(self.kl_coef) and self.kl_coef >= 0, "kl_coef", "a finite number >= 0",
               self.kl_coef)
        expect(problems, self.behaviour_cap is None or (_finite(self.behaviour_cap) and self.behaviour_cap > 1),
               "behaviour_cap", "None or a finite number > 1", self.behaviour_cap)
        expect(problems, _finite(self.tis_cap) and self.tis_cap > 0, "tis_cap", "a finite number > 0", self.tis_cap)
        return problems


def _finite(value: Any) -> bool:
    # Wrongly typed fields are reported by the type check; the rules then skip them.
    return is_number(value) and math.isfinite(value)


def _float_tensor(value: Any, name: str) -> torch.Tensor:
    """``value`` as a floating tensor (tensors keep their float dtype; anything else becomes float64)."""
    if isinstance(value, torch.Tensor):
        if value.dtype == torch.bool or value.is_complex():
            raise TypeError(f"{name}: expected real numbers, got dtype {value.dtype}")
        return value if value.is_floating_point() else value.to(torch.float64)
    try:
        return torch.as_tensor(value, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"{name}: expected a tensor of real numbers, got {type(value).__name__}") from None


def _check_finite(tensor: torch.Tensor, name: str) -> None:
    if tensor.numel() and not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"{name}: expected finite values, got NaN or infinity")


def grpo_advantages(rewards: Any, scale: str = "group", eps: float = 1e-6) -> torch.Tensor:
    """Group-relative advantages A = (r - group mean) / (std + eps).

    rewards: (P, G), one row per prompt and G >= 2 responses each. ``scale``: "group" divides by each
    row's unbiased std, "batch" by the unbiased std of all P * G rewards, "none" not at all.
    Returns (P, G) in the rewards' float dtype (float64 for non-tensors). Equal rewards give zeros.
    """
    r = _float_tensor(rewards, "rewards")
    if r.ndim != 2:
        raise ValueError(f"rewards: expected shape (prompts, group size), got {tuple(r.shape)}")
    if r.shape[0] < 1 or r.shape[1] < 2:
        raise ValueError(f"rewards: expected at least one group of at least 2 responses, got shape {tuple(r.shape)}")
    _check_finite(r, "rewards")
    if scale not in ADVANTAGE_SCALES:
        raise ValueError(f"scale: unknown {scale!r}; known: {', '.join(ADVANTAGE_SCALES)}")
    if not (_finite(eps) and eps > 0):
        raise ValueError(f"eps: expected a finite number > 0, got {eps!r}")
    centred = r - r.mean(dim=1, keepdim=True)
    if scale == "group":
        return centred / (r.std(dim=1, keepdim=True) + eps)
    if scale == "batch":
        return centred / (r.std() + eps)
    return centred


def _check_mask(mask: Any, shape: torch.Size, name: str = "response_mask") -> torch.Tensor:
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{name}: expected a tensor, got {type(mask).__name__}")
    if mask.shape != shape:
        raise ValueError(f"{name}: expected shape {tuple(shape)}, got {tuple(mask.shape)}")
    if mask.dtype != torch.bool:
        if mask.is_floating_point() or mask.is_complex() or (mask.numel() and bool(((mask != 0) & (mask != 1)).any())):
            raise ValueError(f"{name}: expected a bool or 0/1 integer tensor, got dtype {mask.dtype}")
        mask = mask != 0
    return mask


def token_log_probs(logits: torch.Tensor, target_ids: torch.Tensor, response_mask: torch.Tensor | None = None,
                    temperature: float = 1.0) -> torch.Tensor:
    """log softmax(logits / temperature) at the target tokens: (B, T, V), (B, T) -> (B, T).

    ``logits[:, t]`` must be the prediction for ``target_ids[:, t]`` (shift a causal LM's logits by one
    before calling). Computed in float32 at least (float64 logits stay float64). Positions outside
    ``response_mask`` (bool or 0/1, (B, T)) are 0 and carry no gradient; their target ids may be any
    value (padding). Differentiable with respect to ``logits``.
    """
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
        raise TypeError(f"logits: expected a floating tensor, got {getattr(logits, 'dtype', type(logits).__name__)}")
    if logits.ndim != 3:
        raise ValueError(f"logits: expected shape (batch, tokens, vocab), got {tuple(logits.shape)}")
    if not isinstance(target_ids, torch.Tensor) or target_ids.is_floating_point() or target_ids.dtype == torch.bool:
        raise TypeError(f"target_ids: expected an integer tensor, got {getattr(target_ids, 'dtype', type(target_ids).__name__)}")
    if target_ids.shape != logits.shape[:2]:
        raise ValueError(f"target_ids: expected shape {tuple(logits.shape[:2])} like logits' first two, "
                         f"got {tuple(target_ids.shape)}")
    if target_ids.device != logits.device:
        raise ValueError(f"target_ids: expected device {logits.device} like logits, got {target_ids.device}")
    if not (_finite(temperature) and temperature > 0):
        raise ValueError(f"temperature: expected a finite number > 0, got {temperature!r}")
    mask = None if response_mask is None else _check_mask(response_mask, target_ids.shape).to(logits.device)
    ids = target_ids.long() if mask is None else torch.where(mask, target_ids.long(), 0)
    vocab = logits.shape[-1]
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab):
        raise ValueError(f"target_ids: expected ids in [0, {vocab}) at response positions, "
                         f"got {int(ids.min())}..{int(ids.max())}")
    work = logits if logits.dtype == torch.float64 else logits.float()
    if temperature != 1.0:
        work = work / temperature
    picked = work.gather(-1, ids.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(work, dim=-1)
    return picked if mask is None else torch.where(mask, picked, torch.zeros_like(picked))


def token_mean(values: torch.Tensor, response_mask: torch.Tensor, num_tokens: int | float | None = None) -> torch.Tensor:
    """Sum of ``values`` over response tokens divided by their number (or by ``num_tokens``).

    Pass ``num_tokens`` = the response tokens of the whole batch when a batch is split into
    micro-batches, so that the micro-batch losses add up to the batch loss.
    """
    mask = _check_mask(response_mask, values.shape)
    count = int(mask.sum()) if num_tokens is None else num_tokens
    if not (_finite(count) and count > 0):
        raise ValueError(f"num_tokens: expected a number > 0 (response tokens), got {count!r}")
    return torch.where(mask, values, torch.zeros_like(values)).sum() / count


def k3_kl(log_probs: torch.Tensor, ref_log_probs: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(pi || pi_ref): exp(d) - d - 1 with d = log pi_ref - log pi.

    Non-negative, unbiased for tokens sampled from pi, and 0 where the two agree. Same shape as inputs.
    """
    if ref_log_probs.shape != log_probs.shape:
        raise ValueError(f"ref_log_probs: expected shape {tuple(log_probs.shape)} like log_probs, "
                         f"got {tuple(ref_log_probs.shape)}")
    d = (ref_log_probs.detach() - log_probs).clamp(-_LOG_RATIO_LIMIT, _LOG_RATIO_LIMIT)
    return torch.exp(d) - d - 1


def _aligned(value: Any, name: str, like: torch.Tensor) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or not value.is_floating_point():
        raise TypeError(f"{name}: expected a floating tensor, got {getattr(value, 'dtype', type(value).__name__)}")
    if value.shape != like.shape:
        raise ValueError(f"{name}: expected shape {tuple(like.shape)} like log_probs, got {tuple(value.shape)}")
    if value.device != like.device:
        raise ValueError(f"{name}: expected device {like.device} like log_probs, got {value.device}")
    return value.detach().to(like.dtype)


def policy_loss(
    log_probs: torch.Tensor,
    old_log_probs: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    config: GRPOConfig | None = None,
    *,
    behaviour_log_probs: torch.Tensor | None = None,
    ref_log_probs: torch.Tensor | None = None,
    num_tokens: int | float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The GRPO loss of a batch (formula in the module docstring) and its metrics.

    log_probs: (B, T) current log-probs of the response tokens, with gradient. old_log_probs: (B, T)
    log-probs under the learner's weights before this update (for ``correction="none"``, those of the
    policy the ratio is taken against). advantages: (B,) one per response or (B, T) per token.
    response_mask: (B, T) bool or 0/1. behaviour_log_probs: (B, T) the sampler's log-probs (required
    by the decoupled and tis corrections, refused otherwise). ref_log_probs: (B, T) a frozen
    reference's (required when ``kl_coef > 0``; with ``kl_coef = 0`` the KL is only measured).
    num_tokens: the token-mean denominator (default: response tokens in this batch).

    Returns the scalar loss (float32, or float64 for float64 log_probs) and float metrics: ``policy_loss`` (the loss without the KL term),
    ``clip_fraction`` (share of response tokens whose gradient the ratio clip stopped),
    ``dual_clip_fraction``, ``ratio_mean``, ``ratio_max``, ``approx_kl`` (token mean of
    log pi_old - log pi), ``tokens``; with a correction ``weight_mean`` (behaviour weight before
    capping) and ``capped_fraction`` (tokens filtered or truncated); with a reference ``kl``.
    """
    config = GRPOConfig() if config is None else config
    if not isinstance(config, GRPOConfig):
        raise TypeError(f"config: expected GRPOConfig, got {type(config).__name__}")
    if not isinstance(log_probs, torch.Tensor) or not log_probs.is_floating_point():
        raise TypeError(f"log_probs: expected a floating tensor, got {getattr(log_probs, 'dtype', type(log_probs).__name__)}")
    if log_probs.ndim != 2:
        raise ValueError(f"log_probs: expected shape (batch, tokens), got {tuple(log_probs.shape)}")
    # The loss is computed in float32 at least (float64 stays float64); the gradient flows back.
    log_probs = log_probs.to(torch.promote_types(log_probs.dtype, torch.float32))
    old = _aligned(old_log_probs, "old_log_probs", log_probs)
    mask = _check_mask(response_mask, log_probs.shape).to(log_probs.device)
    if not bool(mask.any()):
        raise ValueError("response_mask: expected at least one response token, got none")
    adv = _float_tensor(advantages, "advantages").detach().to(device=log_probs.device, dtype=log_probs.dtype)
    if adv.shape == log_probs.shape[:1]:
        adv = adv.unsqueeze(1).expand_as(log_probs)
    elif adv.shape != log_probs.shape:
        raise ValueError(f"advantages: expected shape ({log_probs.shape[0]},) or {tuple(log_probs.shape)}, "
                         f"got {tuple(adv.shape)}")
    _check_finite(torch.where(mask, adv, 0), "advantages")
    if config.correction == "none":
        if behaviour_log_probs is not None:
            raise ValueError("behaviour_log_probs: given, but config.correction is 'none' (use 'decoupled' or 'tis')")
        behaviour = None
    else:
        if behaviour_log_probs is None:
            raise ValueError(f"behaviour_log_probs: required by config.correction={config.correction!r}")
        behaviour = _aligned(behaviour_log_probs, "behaviour_log_probs", log_probs)
    if config.kl_coef > 0 and ref_log_probs is None:
        raise ValueError(f"ref_log_probs: required by config.kl_coef={config.kl_coef}")
    ref = None if ref_log_probs is None else _aligned(ref_log_probs, "ref_log_probs", log_probs)

    ratio = torch.exp((log_probs - old).clamp(-_LOG_RATIO_LIMIT, _LOG_RATIO_LIMIT))
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1.0 - config.clip_low, 1.0 + config.clip_high)
    per_token = torch.maximum(unclipped, clipped)
    clip_active = clipped > unclipped
    dual_active = torch.zeros_like(mask)
    if config.dual_clip is not None:
        bound = -adv * config.dual_clip
        dual_active = (adv < 0) & (per_token > bound)
        per_token = torch.where(dual_active, bound, per_token)
    weight = capped = None
    if behaviour is not None:
        weight = torch.exp((old - behaviour).clamp(-_LOG_RATIO_LIMIT, _LOG_RATIO_LIMIT))
        if config.correction == "decoupled":
            capped = torch.zeros_like(mask) if config.behaviour_cap is None else weight > config.behaviour_cap
            per_token = per_token * torch.where(capped, torch.zeros_like(weight), weight)
        else:
            capped = weight > config.tis_cap
            per_token = per_token * weight.clamp(max=config.tis_cap)
    pg_loss = token_mean(per_token, mask, num_tokens)
    loss = pg_loss
    kl = None
    if ref is not None:
        kl = k3_kl(log_probs, ref)
        if config.kl_coef > 0:
            loss = loss + config.kl_coef * token_mean(kl, mask, num_tokens)

    with torch.no_grad():
        count = mask.sum()

        def share(flags: torch.Tensor) -> float:
            return float((flags & mask).sum() / count)

        def mean(values: torch.Tensor) -> float:
            return float(torch.where(mask, values, torch.zeros_like(values)).sum() / count)

        metrics = {
            "policy_loss": pg_loss.item(), "clip_fraction": share(clip_active),
            "dual_clip_fraction": share(dual_active), "ratio_mean": mean(ratio),
            "ratio_max": float(ratio[mask].max()), "approx_kl": mean(old - log_probs.detach()),
            "tokens": float(count),
        }
        if weight is not None:
            metrics["weight_mean"] = mean(weight)
            metrics["capped_fraction"] = share(capped)
        if kl is not None:
            metrics["kl"] = mean(kl)
    return loss, metrics
