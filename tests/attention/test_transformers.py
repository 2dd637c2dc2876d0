"""attn_implementation="pangu" against "eager" on tiny random Llama and Qwen2 models."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

from pangu_core import attention as attn

attn.register_transformers()  # makes attn_implementation="pangu" known to transformers


def _configs():
    common = dict(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=8,
                  max_position_embeddings=256, pad_token_id=0, eos_token_id=None, bos_token_id=None)
    # openPangu-Embedded layout: GQA with q/k/v/o bias (Llama with attention_bias); Qwen2 has q/k/v bias.
    return {
        "llama-gqa-bias": LlamaConfig(num_key_value_heads=2, attention_bias=True, **common),
        "llama-mha": LlamaConfig(num_key_value_heads=8, **common),
        "qwen2-gqa": Qwen2Config(num_key_value_heads=1, **common),
    }


def _pair(config):
    torch.manual_seed(0)
    eager = AutoModelForCausalLM.from_config(copy.deepcopy(config), attn_implementation="eager").eval()
    pangu = AutoModelForCausalLM.from_config(copy.deepcopy(config), attn_implementation="pangu").eval()
    pangu.load_state_dict(eager.state_dict())
    assert pangu.config._attn_implementation == "pangu"
    return eager, pangu


@pytest.fixture(scope="module", params=list(_configs()))
def models(request):
    return _pair(_configs()[request.param])


def test_logits_match_eager(models):
    # Invariant: same logits as eager attention for an unpadded batch (causal prefill).
    eager, pangu = models
    ids = torch.randint(1, 96, (2, 23), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(pangu(ids).logits, eager(ids).logits, atol=1e-4, rtol=1e-4)


def test_logits_match_eager_with_left_padding(models):
    # Invariant: a 2-D padding mask is honoured (packed as variable-length sequences).
    eager, pangu = models
    ids = torch.randint(1, 96, (3, 17), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(ids)
    mask[1, :5] = 0
    mask[2, :16] = 0
    with torch.no_grad():
        a = eager(ids, attention_mask=mask).logits
        b = pangu(ids, attention_mask=mask).logits
    valid = mask.bool()
    assert torch.allclose(b[valid], a[valid], atol=1e-4, rtol=1e-4)


def test_greedy_generation_matches_eager(models):
    # Invariant: generation with a KV cache (decode path, one query per step) yields the same tokens.
    eager, pangu = models
    ids = torch.randint(1, 96, (2, 9), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(ids)
    mask[0, :3] = 0
    with torch.no_grad():
        a = eager.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=False)
        b = pangu.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=False)
        c = eager.generate(ids[1:], max_new_tokens=6, do_sample=False)
        d = pangu.generate(ids[1:], max_new_tokens=6, do_sample=False)
    assert torch.equal(a, b)
    assert torch.equal(c, d)


def test_training_step_gradients_match_eager():
    # Invariant: the model trains through the custom op: parameter gradients match eager's.
    eager, pangu = _pair(_configs()["llama-gqa-bias"])
    eager.train()
    pangu.train()
    ids = torch.randint(1, 96, (2, 20), generator=torch.Generator().manual_seed(4))
    eager(ids, labels=ids).loss.backward()
    pangu(ids, labels=ids).loss.backward()
    for (name, pe), (_, pp) in zip(eager.named_parameters(), pangu.named_parameters()):
        assert torch.allclose(pp.grad, pe.grad, atol=1e-5, rtol=1e-4), name


def test_dropout_in_training_is_rejected():
    # Invariant: attention dropout is not silently ignored.
    config = _configs()["qwen2-gqa"]
    config.attention_dropout = 0.1
    _, pangu = _pair(config)
    pangu.train()
    with pytest.raises(ValueError, match="dropout"):
        pangu(torch.randint(1, 96, (1, 5)))


def test_registration_is_idempotent_and_importing_registers():
    # Invariant: registering again (by the function or by importing the module) keeps one working
    # "pangu" entry pointing at our attention function.
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    from pangu_core.attention import transformers_integration

    attn.register_transformers()
    transformers_integration.register()
    assert AttentionInterface()["pangu"] is transformers_integration.pangu_attention_forward
    assert "pangu" in ALL_MASK_ATTENTION_FUNCTIONS
    _, pangu = _pair(_configs()["llama-mha"])
    with torch.no_grad():
        assert torch.isfinite(pangu(torch.randint(1, 96, (1, 6))).logits).all()
