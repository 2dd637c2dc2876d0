"""Reinforcement-learning pieces for the latency-tolerant scheduler.

What exists: :mod:`pangu_core.rl.priority` (the priority of a GRPO group from its rewards, version lag
and length, for :class:`pangu_core.queue.PriorityQueue`). Not built yet: policy losses, rollout
workers, the learner and the scheduler loop.
"""
