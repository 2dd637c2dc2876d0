"""Reinforcement-learning pieces for the latency-tolerant scheduler.

What exists: :mod:`pangu_core.rl.grpo` (the GRPO loss maths: group advantages, token log-probs, the
clipped loss with dual clip, k3 KL and the decoupled / truncated-importance-sampling corrections for
stale rollouts, and :class:`~pangu_core.rl.grpo.GRPOConfig`) and :mod:`pangu_core.rl.priority` (the
priority of a GRPO group from its rewards, version lag and length, for
:class:`pangu_core.queue.PriorityQueue`). Not built yet: rollout workers, the learner and the
scheduler loop.
"""
