"""``RewardScorer.score(samples) -> results``: MARS end to end over a bounded pool, in batches.

Samples are routed by task type to their sources (``RouterConfig.routes``), each source scores its
share of a batch, the sources run concurrently on at most ``RewardConfig.workers`` threads, and the
scores are combined by :class:`~pangu_core.rewards.router.AdaptiveWeights`. No signals anywhere, so
a scorer works inside threads and Ray actors; it pickles as its config (workers restart lazily).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

from tqdm.auto import tqdm

from pangu_core.rewards.config import RewardConfig
from pangu_core.rewards.router import AdaptiveWeights, RewardSource, create_source
from pangu_core.rewards.types import RewardResult, Sample, SourceScore


class RewardScorer:
    """Scores samples with the configured sources; reusable, thread-safe, ``close()`` when done."""

    def __init__(self, config: RewardConfig | None = None) -> None:
        self.config = config or RewardConfig()
        if not isinstance(self.config, RewardConfig):
            raise TypeError(f"config: expected RewardConfig, got {type(self.config).__name__}")
        self._sources: dict[str, RewardSource] = {}
        self._lock = threading.Lock()
        self.weights = AdaptiveWeights(self.config.router)
        self._pool = ThreadPoolExecutor(self.config.workers, thread_name_prefix="pangu-reward")

    def __getstate__(self) -> dict:
        return {"config": self.config}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["config"])

    def __enter__(self) -> "RewardScorer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        with self._lock:
            for source in self._sources.values():
                source.close()
            self._sources.clear()

    def source(self, name: str) -> RewardSource:
        """The scorer's instance of source ``name`` (created on first use)."""
        with self._lock:
            if name not in self._sources:
                self._sources[name] = create_source(name, self.config)
            return self._sources[name]

    def score(self, samples: Sequence[Sample]) -> list[RewardResult]:
        """One :class:`RewardResult` per sample, in order."""
        samples = list(samples)
        for i, s in enumerate(samples):
            if not isinstance(s, Sample):
                raise TypeError(f"samples[{i}]: expected Sample, got {type(s).__name__}")
            self.config.router.sources_for(s.task_type)  # unknown task types fail before any work
        results: list[RewardResult] = []
        size = self.config.batch_size
        batches = range(0, len(samples), size)
        for start in tqdm(batches, desc="rewards", disable=not self.config.show_progress or len(batches) < 2):
            results += self._score_batch(samples[start:start + size])
        return results

    def _score_batch(self, batch: list[Sample]) -> list[RewardResult]:
        routed: dict[str, list[int]] = {}
        for i, s in enumerate(batch):
            for name in self.config.router.sources_for(s.task_type):
                routed.setdefault(name, []).append(i)
        futures = {name: self._pool.submit(self.source(name).score, [batch[i] for i in idx])
                   for name, idx in routed.items()}
        per_sample: list[dict[str, SourceScore]] = [{} for _ in batch]
        for name, future in futures.items():
            verdicts = future.result()
            self.weights.observe(name, verdicts)
            for i, verdict in zip(routed[name], verdicts):
                per_sample[i][name] = verdict
        return [
            RewardResult(
                reward=self.weights.combine(scores),
                scores={k: v.score for k, v in scores.items()},
                reasons={k: v.reason for k, v in scores.items()},
            )
            for scores in per_sample
        ]
