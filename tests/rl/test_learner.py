"""The GRPO learner step, alone and inside the scheduler: the one-token bandit is learned end to end."""

from __future__ import annotations

import types
import uuid

import pytest
import torch

from pangu_core.rl.grpo import GRPOConfig
from pangu_core.rl.learner import grpo_step
from pangu_core.rl.rollout import Generation, response_log_probs
from pangu_core.rl.scheduler import Coordinator, Prompt, RolloutGroup, ScheduleConfig, run_threads
from pangu_core.sync import Publisher, Subscriber, SyncConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")

VOCAB, RIGHT = 16, 11


class OneLayerLM(torch.nn.Module):
    """A one-layer causal LM with the transformers call signature: logits = head(embed(ids))."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.embed = torch.nn.Embedding(VOCAB, 8)
        self.head = torch.nn.Linear(8, VOCAB)
        with torch.no_grad():
            for parameter in self.parameters():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)

    def forward(self, input_ids, attention_mask=None):
        return types.SimpleNamespace(logits=self.head(self.embed(input_ids)))


class OneTokenGenerator:
    """Samples one-token answers from a OneLayerLM at the temperature, with their log-probs."""

    def __init__(self, model: OneLayerLM, seed: int) -> None:
        self.model, self.random = model, torch.Generator().manual_seed(seed)

    @torch.no_grad()
    def generate(self, prompt_ids, n, temperature, max_new_tokens):
        logits = self.model(torch.tensor([p[-1:] for p in prompt_ids])).logits[:, -1] / temperature
        answers = torch.multinomial(logits.softmax(-1), n, replacement=True, generator=self.random)
        log_probs = logits.log_softmax(-1).gather(1, answers)
        return Generation([[int(a)] for a in answers.flatten()], [lp.reshape(1) for lp in log_probs.flatten()])


def reward(prompt, responses):
    return [float(r == [RIGHT]) for r in responses]


# The step makes one optimiser step on the GRPO loss: rewarded answers become likelier, and with
# no correction the ratio is taken against the generator's behaviour log-probs.
def test_grpo_step_moves_towards_rewarded_answers():
    torch.manual_seed(0)
    model = OneLayerLM()
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    prompt = Prompt(0, (3,))
    generation = OneTokenGenerator(model, seed=0).generate([[3]], 8, 1.0, 1)
    responses = [[RIGHT]] + generation.responses[1:]
    log_probs = [response_log_probs(model, [[3]], [r])[0].detach()[0] for r in responses]
    group = RolloutGroup(prompt, responses, log_probs, reward(prompt, responses), 0, 0, 0)
    before = model(torch.tensor([[3]])).logits[0, -1].softmax(-1)[RIGHT].item()
    metrics = grpo_step(model, optimizer, [group], GRPOConfig(), max_grad_norm=None)
    after = model(torch.tensor([[3]])).logits[0, -1].softmax(-1)[RIGHT].item()
    assert after > before
    assert metrics["ratio_mean"] == pytest.approx(1.0, abs=1e-6)     # behaviour = learner weights here
    assert metrics["reward_mean"] == pytest.approx(sum(group.rewards) / 8)
    for correction in ("decoupled", "tis"):
        metrics = grpo_step(model, optimizer, [group], GRPOConfig(correction=correction))
        assert "weight_mean" in metrics and metrics["clip_fraction"] == 0.0
    with pytest.raises(ValueError, match="groups: expected one group size"):
        grpo_step(model, optimizer, [group, RolloutGroup(prompt, responses[:2], log_probs[:2], [0.0, 1.0], 0, 0, 0)])
    with pytest.raises(ValueError, match=r"groups: response 0 has 1 tokens but \(2,\) log-probs"):
        grpo_step(model, optimizer, [RolloutGroup(prompt, responses, [torch.zeros(2)] * 8, group.rewards, 0, 0, 0)])


# End to end: two rollout threads pulling weights over shared memory one version behind (eta = 1),
# the priority queue, the decoupled loss: the bandit reaches mean reward >= 0.9 within 50 steps,
# and no consumed group is staler than eta.
@pytest.mark.parametrize("eta,correction", [(0, "none"), (1, "decoupled"), (1, "tis")])
def test_bandit_through_the_scheduler(eta, correction):
    torch.manual_seed(0)
    learner = OneLayerLM(seed=0)
    optimizer = torch.optim.Adam(learner.parameters(), lr=0.05)
    config = ScheduleConfig(eta=eta, group_size=8, batch_groups=4, prompts_per_claim=2, max_new_tokens=1,
                            poll_s=0.05, batch_timeout_s=30.0)
    coordinator = Coordinator([Prompt(0, (3,))], config)
    rewards = []

    def step(batch, k):
        metrics = grpo_step(learner, optimizer, batch, GRPOConfig(correction=correction))
        rewards.append(metrics["reward_mean"])
        return metrics

    sync = SyncConfig(transport="shm", name=f"b{uuid.uuid4().hex[:12]}", publish_dtype=None, timeout_s=5.0)
    with Publisher(learner, sync) as publisher:
        publisher.publish(version=0)
        copies = [OneLayerLM(seed=i + 1) for i in range(2)]     # different until the first pull
        subscribers = [Subscriber(c, sync, address=publisher.address) for c in copies]
        try:
            report = run_threads(coordinator, publisher, step, 50,
                                 [(OneTokenGenerator(c, seed=i), reward, s)
                                  for i, (c, s) in enumerate(zip(copies, subscribers))])
        finally:
            for subscriber in subscribers:
                subscriber.close()
    assert report["max_lag_consumed"] <= eta
    assert rewards[0] < 0.5
    assert max(rewards) >= 0.9 and sum(rewards[-5:]) / 5 >= 0.9
