"""One GRPO learner step on a batch of rollout groups (a causal LM, its optimiser, the loss of rl.grpo).

The step recomputes the responses' log-probs with the learner's weights in one forward pass
(:func:`pangu_core.rl.rollout.response_log_probs`), takes the group advantages of the rewards, and
makes one optimiser step on :func:`pangu_core.rl.grpo.policy_loss`. With one optimiser step per
batch the learner's weights before the update (the proximal policy of the decoupled loss, the
"old" policy of TIS) are the current weights, so their log-probs are the forward pass's, detached.
Without a correction the ratio is taken against the behaviour log-probs the generator returned.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from pangu_core.rl.grpo import GRPOConfig, grpo_advantages, policy_loss
from pangu_core.rl.rollout import response_log_probs

__all__ = ["grpo_step"]


def grpo_step(model, optimizer: torch.optim.Optimizer, groups: Sequence[Any], config: GRPOConfig | None = None,
              temperature: float = 1.0, pad_id: int = 0, max_grad_norm: float | None = 1.0) -> dict[str, float]:
    """One optimiser step of ``model`` on ``groups`` (RolloutGroup-like: prompt.ids, responses, log_probs, rewards).

    All groups must have the same group size. ``temperature`` must be the sampling temperature
    (the behaviour log-probs were taken at it). Gradients are clipped to ``max_grad_norm`` (None: not
    clipped). Returns the loss metrics plus ``loss``, ``reward_mean`` and ``grad_norm``.
    """
    config = GRPOConfig() if config is None else config
    if not isinstance(config, GRPOConfig):
        raise TypeError(f"config: expected GRPOConfig, got {type(config).__name__}")
    if not groups:
        raise ValueError("groups: expected at least one group")
    sizes = {len(g.responses) for g in groups}
    if len(sizes) != 1:
        raise ValueError(f"groups: expected one group size, got sizes {sorted(sizes)}")
    rewards = torch.tensor([list(g.rewards) for g in groups], dtype=torch.float64)
    advantages = grpo_advantages(rewards, config.advantage_scale, config.advantage_eps).flatten()
    prompts = [list(g.prompt.ids) for g in groups for _ in g.responses]
    responses = [list(r) for g in groups for r in g.responses]
    behaviour_rows = [torch.as_tensor(lp, dtype=torch.float32) for g in groups for lp in g.log_probs]
    for row, (response, lp) in enumerate(zip(responses, behaviour_rows)):
        if lp.shape != (len(response),):
            raise ValueError(f"groups: response {row} has {len(response)} tokens but {tuple(lp.shape)} log-probs")
    model.train()
    log_probs, mask = response_log_probs(model, prompts, responses, temperature, pad_id)
    behaviour = torch.zeros_like(log_probs)
    for row, lp in enumerate(behaviour_rows):
        behaviour[row, :lp.numel()] = lp.to(behaviour.device)
    advantages = advantages.to(device=log_probs.device, dtype=log_probs.dtype)
    if config.correction == "none":
        loss, metrics = policy_loss(log_probs, behaviour, advantages, mask, config)
    else:
        loss, metrics = policy_loss(log_probs, log_probs.detach(), advantages, mask, config,
                                    behaviour_log_probs=behaviour)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    parameters = [p for p in model.parameters() if p.grad is not None]
    if max_grad_norm is not None:
        norm = torch.nn.utils.clip_grad_norm_(parameters, max_grad_norm)
    else:
        norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in parameters])) if parameters else torch.zeros(())
    optimizer.step()
    metrics.update(loss=loss.item(), reward_mean=float(rewards.mean()), grad_norm=float(norm))
    return metrics
