"""Over-generation (ScheduleConfig.rollout_groups): the queue chooses, leftovers leave unused."""

from __future__ import annotations

import pytest
import torch

from pangu_core.config import ConfigError
from pangu_core.rl.scheduler import Coordinator, Prompt, RolloutGroup, ScheduleConfig


def make_prompts(count: int) -> list[Prompt]:
    return [Prompt(i, (i + 1,), reference=str(i)) for i in range(count)]


def groups(claim, version, rewards_of):
    """One group per prompt of the claim, with the rewards rewards_of(prompt index) gives."""
    return [RolloutGroup(p, [[1], [2]], [torch.zeros(1)] * 2, rewards_of(p.index), version, claim.chunk, 0)
            for p in claim.prompts]


def spread_on_odd(index: int) -> list[float]:
    """Odd prompts get a reward spread (a learning signal), even ones all-correct answers (none)."""
    return [1.0, 0.0] if index % 2 else [1.0, 1.0]


@pytest.mark.parametrize("fifo", [False, True])
def test_learner_takes_the_best_of_a_larger_chunk_and_leftovers_are_dropped(fifo):
    config = ScheduleConfig(eta=1, group_size=2, batch_groups=2, prompts_per_claim=2, rollout_groups=4, fifo=fifo)
    coordinator = Coordinator(make_prompts(20), config)
    claims = [coordinator.claim(worker=0) for _ in range(4)]
    # A chunk is rollout_groups prompts: two claims of two per chunk, and chunk c needs version c - eta.
    assert [(c.chunk, c.min_version) for c in claims] == [(0, -1), (0, -1), (1, 0), (1, 0)]
    assert [p.index for c in claims for p in c.prompts] == list(range(8))

    coordinator.submit(groups(claims[0], 0, spread_on_odd) + groups(claims[1], 0, spread_on_odd))
    first = coordinator.take_batch()
    # Priority takes the groups with a spread (prompts 1 and 3); FIFO the first two put (0 and 1).
    assert sorted(g.prompt.index for g in first) == ([0, 1] if fifo else [1, 3])
    coordinator.advance(1)
    coordinator.submit(groups(claims[2], 1, spread_on_odd) + groups(claims[3], 1, spread_on_odd))
    second = coordinator.take_batch()
    # Priority: the spread groups of version 1 (5, 7) beat the all-correct leftovers 0 and 2 of
    # version 0; FIFO: the leftovers 2 and 3 were put first.
    assert sorted(g.prompt.index for g in second) == ([2, 3] if fifo else [5, 7])
    coordinator.advance(2)   # groups of version 0 still queued are stale now: they leave unused
    # Dropped, not served again: the next chunk starts with fresh prompts.
    assert [p.index for p in coordinator.claim(worker=0).prompts] == [8, 9]
    stats = coordinator.stats()
    skipped = 0 if fifo else 2
    assert stats["skipped"] == skipped and stats["handed_back"] == 0
    queue = stats["queue"]
    assert queue["put"] == queue["got"] + queue["evicted"] + queue["dropped"] + queue["size"]
    assert (queue["put"], queue["got"], queue["evicted"], queue["size"]) == (8, 4, skipped, 4 - skipped)
    # The mean reward of every answer generated, by the version that generated it.
    assert stats["generated_reward"] == {0: 0.75, 1: 0.75}


def test_learner_waits_for_a_whole_chunk_before_it_chooses():
    config = ScheduleConfig(eta=1, group_size=2, batch_groups=2, prompts_per_claim=2, rollout_groups=4,
                            poll_s=0.01)
    coordinator = Coordinator(make_prompts(8), config)
    first = coordinator.claim(worker=0)
    coordinator.submit(groups(first, 0, spread_on_odd))      # half a chunk: enough for a batch, not a choice
    with pytest.raises(TimeoutError, match="fewer than rollout_groups=4 groups queued"):
        coordinator.take_batch(timeout_s=0.05)
    coordinator.submit(groups(coordinator.claim(worker=0), 0, spread_on_odd))
    assert sorted(g.prompt.index for g in coordinator.take_batch(timeout_s=1.0)) == [1, 3]


def test_without_rollout_groups_stale_prompts_still_come_back():
    config = ScheduleConfig(eta=0, group_size=2, batch_groups=2, prompts_per_claim=2)
    assert config.chunk_groups == 2
    coordinator = Coordinator(make_prompts(6), config)
    claim = coordinator.claim(worker=0)
    coordinator.advance(1)                                  # the claim's weights are too old now
    coordinator.submit(groups(claim, 0, spread_on_odd))     # refused at put, prompts handed back
    assert [p.index for p in coordinator.claim(worker=0).prompts] == [0, 1]
    assert coordinator.stats()["skipped"] == 0 and coordinator.stats()["handed_back"] == 2


def test_rollout_groups_below_the_batch_is_refused_by_name():
    with pytest.raises(ConfigError, match="rollout_groups: expected None or an int >= batch_groups=8, got 4"):
        ScheduleConfig(rollout_groups=4)
    assert ScheduleConfig(rollout_groups=16).chunk_groups == 16
