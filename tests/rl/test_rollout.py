"""Rollout generation: behaviour log-probs are exact (a plain forward pass and the sampler agree)."""

from __future__ import annotations

import pytest
import torch

from pangu_core.rl.rollout import Generation, Generator, TransformersGenerator, response_log_probs
from pangu_core.tasks.model import tiny_pangu

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model(tokenizer):
    """A nano model whose eos logit is raised by 1.5 so that many sampled answers end early."""
    net = tiny_pangu("nano", tokenizer, seed=0)
    eos = tokenizer.eos_token_id

    def raise_eos(module, inputs, output):
        output = output.clone()
        output[..., eos] += 1.5
        return output

    net.lm_head.register_forward_hook(raise_eos)
    return net.eval()


def prompts_of(tokenizer):
    texts = ["2+3=", "What is 17*4? Think step by step.", "x"]   # three prompt lengths: left padding matters
    return [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


def recompute(model, prompt, response, temperature):
    """log softmax(logits / T) of one unpadded sequence at its response tokens (no batching at all)."""
    ids = torch.tensor([prompt + response])
    logits = model(input_ids=ids).logits[0, len(prompt) - 1:-1].double() / temperature
    return logits.log_softmax(-1).gather(-1, torch.tensor(response)[:, None])[:, 0]


# The behaviour log-probs equal an independent per-sequence forward pass of the same weights, for
# answers cut at eos and answers that ran to max_new_tokens, with prompts of different lengths.
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_behaviour_log_probs_equal_a_forward_pass(model, tokenizer, temperature):
    prompts = prompts_of(tokenizer)
    generator = TransformersGenerator(model, tokenizer)
    assert isinstance(generator, Generator)
    torch.manual_seed(0)
    generation = generator.generate(prompts, n=4, temperature=temperature, max_new_tokens=10)
    assert isinstance(generation, Generation)
    assert len(generation.responses) == len(generation.log_probs) == 12
    eos = tokenizer.eos_token_id
    ended = [r for r in generation.responses if r[-1] == eos]
    assert ended and len(ended) < 12                       # both kinds of answer occur
    for row, (response, log_probs) in enumerate(zip(generation.responses, generation.log_probs)):
        assert 1 <= len(response) <= 10 and eos not in response[:-1]
        assert log_probs.dtype == torch.float32 and log_probs.shape == (len(response),)
        expected = recompute(model, prompts[row // 4], response, temperature)
        torch.testing.assert_close(log_probs.double(), expected, rtol=0, atol=2e-5)


# The returned log-probs are those of the distribution the sampler drew from: model.generate's own
# processed scores (temperature applied, no top-k / top-p) give the same tokens and log-probs.
def test_behaviour_log_probs_match_the_sampler_scores(model, tokenizer):
    prompt = prompts_of(tokenizer)[1]
    torch.manual_seed(3)
    generation = TransformersGenerator(model, tokenizer).generate([prompt], n=2, temperature=0.8, max_new_tokens=6)
    torch.manual_seed(3)
    out = model.generate(input_ids=torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                         max_new_tokens=6, do_sample=True, temperature=0.8, top_k=0, top_p=1.0, num_return_sequences=2,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         output_scores=True, return_dict_in_generate=True)
    for row, response in enumerate(generation.responses):
        assert out.sequences[row, len(prompt):len(prompt) + len(response)].tolist() == response
        sampler = torch.stack([out.scores[t][row].log_softmax(-1)[token] for t, token in enumerate(response)])
        torch.testing.assert_close(generation.log_probs[row], sampler.float(), rtol=0, atol=2e-5)


# response_log_probs is differentiable (the learner's forward) and masks the padding of short answers.
def test_response_log_probs_batch_and_gradient(model, tokenizer):
    prompts = prompts_of(tokenizer)
    responses = [[5, 6, 7], [8], []]
    log_probs, mask = response_log_probs(model, prompts, responses, temperature=1.0,
                                         pad_id=tokenizer.pad_token_id)
    assert log_probs.shape == mask.shape == (3, 3)
    assert mask.tolist() == [[True, True, True], [True, False, False], [False, False, False]]
    assert log_probs[~mask].abs().sum() == 0
    torch.testing.assert_close(log_probs[0].double(), recompute(model, prompts[0], [5, 6, 7], 1.0), rtol=0, atol=2e-5)
    log_probs.sum().backward()
    assert model.lm_head.weight.grad is not None and model.lm_head.weight.grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)


# Bad arguments and a model whose generation config would bias the sampler are refused by name.
def test_generator_errors(model, tokenizer):
    generator = TransformersGenerator(model, tokenizer)
    prompts = prompts_of(tokenizer)
    with pytest.raises(ValueError, match="n: expected an int >= 1, got 0"):
        generator.generate(prompts, n=0, temperature=1.0, max_new_tokens=4)
    with pytest.raises(ValueError, match="temperature: expected a finite number > 0, got 0.0"):
        generator.generate(prompts, n=1, temperature=0.0, max_new_tokens=4)
    with pytest.raises(ValueError, match="max_new_tokens: expected an int >= 1"):
        generator.generate(prompts, n=1, temperature=1.0, max_new_tokens=2.5)
    with pytest.raises(ValueError, match=r"prompt_ids\[1\]: expected a non-empty list of token ids"):
        generator.generate([[1, 2], []], n=1, temperature=1.0, max_new_tokens=4)
    with pytest.raises(ValueError, match="prompt_ids: expected a non-empty sequence"):
        generator.generate("2+3=", n=1, temperature=1.0, max_new_tokens=4)
    with pytest.raises(ValueError, match="responses: expected 3 rows like prompt_ids, got 1"):
        response_log_probs(model, prompts, [[1]])
    with pytest.raises(ValueError, match="batch_size: expected None or an int >= 1"):
        TransformersGenerator(model, tokenizer, batch_size=0)
    biased = tiny_pangu("nano", tokenizer, seed=0)
    biased.generation_config.repetition_penalty = 1.3
    with pytest.raises(ValueError, match=r"model: generation_config sets repetition_penalty=1.3"):
        TransformersGenerator(biased, tokenizer)
