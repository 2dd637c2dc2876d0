"""Reinforcement learning on the latency-tolerant scheduler (Stage 1b).

Modules:

- :mod:`~pangu_core.rl.grpo`: the GRPO loss maths (group advantages, token log-probs, the clipped
  loss with dual clip, k3 KL, the decoupled and truncated-importance-sampling corrections for stale
  rollouts) and :class:`~pangu_core.rl.grpo.GRPOConfig`.
- :mod:`~pangu_core.rl.rollout`: the generator protocol (responses with behaviour log-probs), its
  transformers implementation, and the log-probs of responses by one forward pass.
- :mod:`~pangu_core.rl.learner`: one GRPO optimiser step on a batch of rollout groups.
- :mod:`~pangu_core.rl.priority`: the priority of a group from its rewards, version lag and length.
- :mod:`~pangu_core.rl.scheduler`: the coordinator (prompt stream, chunk accounting under the
  staleness bound eta, the priority queue), the rollout worker loop, the learner loop, threads.
- :mod:`~pangu_core.rl.processes`: rollout workers as processes (pipes to the coordinator, weights
  over shared memory), with dead workers reported by name.
- :mod:`~pangu_core.rl.config`, :mod:`~pangu_core.rl.run`, :mod:`~pangu_core.rl.report`,
  :mod:`~pangu_core.rl.cli`: the ``pangu-core rl`` command (a resumable run folder, snapshots
  evaluated after the run, ``report.json`` with the speed model, ``report.png``).
- :mod:`~pangu_core.rl.ray_backend`: ``--backend ray``: the learner as a threaded Ray actor holding
  the coordinator and the publisher, rollout and reward actors, per-node weight relays, restarts.
- :mod:`~pangu_core.rl.torchrun_backend`: ``--backend torchrun``: rank 0 learns, the other ranks roll
  out, in lockstep rounds (one-step-off) or behind per-node relays.
"""
