"""The tiny Pangu model: openPangu-Embedded's architecture at small scale, saved and loaded intact."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from pangu_core.tasks.model import SIZES, count_parameters, tiny_config, tiny_pangu


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_architecture_mirrors_openpangu_embedded():
    # GQA 4:1, q/k/v/o bias, RMSNorm eps 1e-5, SwiGLU, untied embeddings.
    model = tiny_pangu("nano", vocab_size=100)
    config = model.config
    assert config.num_attention_heads == 4 * config.num_key_value_heads
    assert config.rms_norm_eps == 1e-5 and config.hidden_act == "silu" and not config.tie_word_embeddings
    attention = model.model.layers[0].self_attn
    for projection in (attention.q_proj, attention.k_proj, attention.v_proj, attention.o_proj):
        assert projection.bias is not None
    assert model.model.layers[0].mlp.gate_proj.bias is None
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()


def test_named_sizes_span_about_one_to_twenty_million_parameters():
    counts = {size: count_parameters(tiny_pangu(size, vocab_size=110)) for size in ("nano", "small")}
    assert 0.5e6 < counts["nano"] < 1.5e6 and 15e6 < counts["small"] < 25e6
    assert list(SIZES) == ["nano", "micro", "mini", "small"]


def test_sdpa_and_eager_agree_and_save_load_round_trips(tmp_path):
    # Both attention paths compute the same function; save_pretrained/from_pretrained keeps weights exactly.
    sdpa = tiny_pangu("nano", vocab_size=50, seed=7, attn_implementation="sdpa")
    eager = tiny_pangu("nano", vocab_size=50, seed=7, attn_implementation="eager")
    ids = torch.randint(0, 50, (2, 13))
    mask = torch.ones_like(ids)
    mask[1, :4] = 0
    with torch.no_grad():
        a = sdpa(input_ids=ids, attention_mask=mask).logits
        b = eager(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(a[0], b[0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(a[1, 4:], b[1, 4:], rtol=1e-4, atol=1e-4)
    sdpa.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    for (name, p), (_, q) in zip(sdpa.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(p, q), name
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, sdpa(input_ids=ids).logits, rtol=0, atol=0)


def test_seed_fixes_initial_weights_without_touching_global_rng():
    state = torch.get_rng_state()
    first = tiny_pangu("nano", vocab_size=30, seed=1)
    assert torch.equal(torch.get_rng_state(), state)
    second = tiny_pangu("nano", vocab_size=30, seed=1)
    assert all(torch.equal(p, q) for p, q in zip(first.parameters(), second.parameters()))


def test_bad_arguments_list_the_choices():
    with pytest.raises(ValueError, match="known: nano, micro, mini, small"):
        tiny_config("huge")
    with pytest.raises(ValueError) as error:
        tiny_config("nano", vocab_size=1, attn_implementation="flash", rope_theta=-1)
    assert all(n in str(error.value) for n in ("vocab_size", "attn_implementation", "rope_theta"))
