"""GRPO-style reinforcement learning on a latency-tolerant (stale synchronous) scheduler."""
