"""`pangu-core bench attention`: baselines do the same work, ceilings match the dtype, devices skip cleanly.

No timing is asserted: the cases run at tiny shapes and only their structure is checked.
"""

from __future__ import annotations

import math

import pytest
import torch

import pangu_core
from pangu_core import attention as attn
from pangu_core import device as device_module
from pangu_core.bench import attention as bench_attn
from pangu_core.bench import common
from pangu_core.bench import _attention_model as bench_model


@pytest.fixture(scope="module")
def tiny_pair():
    config = bench_model.model_config(vocab_size=128, hidden_size=64, layers=2, max_positions=128)
    pangu, sdpa = bench_model.build_pair(config)
    return config, pangu.eval(), sdpa.eval()


def test_model_has_gqa_and_qkvo_bias(tiny_pair):
    config, pangu, _ = tiny_pair
    assert config.num_key_value_heads < config.num_attention_heads
    layer = pangu.model.layers[0].self_attn
    assert all(getattr(layer, n).bias is not None for n in ("q_proj", "k_proj", "v_proj", "o_proj"))
    assert pangu.config._attn_implementation == "pangu"


def test_full_size_model_is_about_30m_parameters():
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(bench_model.model_config(), attn_implementation="sdpa")
    assert 25e6 <= sum(p.numel() for p in model.parameters()) <= 35e6


def test_pangu_and_sdpa_models_give_the_same_logits(tiny_pair):
    config, pangu, sdpa = tiny_pair
    ids = torch.randint(1, config.vocab_size, (3, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(pangu(ids).logits, sdpa(ids).logits, atol=1e-4, rtol=1e-4)


def test_generate_and_sft_step_do_the_same_work(tiny_pair):
    config, pangu, sdpa = tiny_pair
    ids = torch.randint(1, config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(1))
    a = bench_model.generate_fn(pangu, ids, 6)()
    b = bench_model.generate_fn(sdpa, ids, 6)()
    assert a.shape == (2, 30)  # exactly the asked-for new tokens (no early stop)
    assert torch.equal(a, b)
    p2, s2 = bench_model.build_pair(config)
    loss_p = bench_model.sft_step_fn(p2)(ids)
    loss_s = bench_model.sft_step_fn(s2)(ids)
    assert math.isclose(loss_p, loss_s, rel_tol=1e-4)
    for (name, wp), ws in zip(p2.named_parameters(), s2.parameters()):
        assert torch.allclose(wp, ws, atol=1e-5), name  # the AdamW step moved both the same way


def test_model_case_records_fields(monkeypatch, check_spread):
    monkeypatch.setattr(bench_model, "SHAPES", {"generate_micro_ctx2k": dict(batch=2, prompt=16, new_tokens=3),
                                                "sft_step_micro": dict(batch=2, seq=16)})
    monkeypatch.setattr(bench_model, "model_config", _tiny_config)
    for name in bench_model.CASE_NAMES:
        case = bench_model.run_case(name, quick=True, device="cpu")
        assert case["case"] == name and case["metric"] == "tokens/s"
        assert case["repeats"] == 3 and case["child_process"] is False
        assert case["ours"] > 0 and case["baseline_value"] > 0
        assert "sdpa" in case["baseline"]
        check_spread(case)
    assert case["first_loss_ours"] == pytest.approx(case["first_loss_baseline"], rel=1e-4)
    with pytest.raises(ValueError, match="name: unknown model case 'nope'"):
        bench_model.run_case("nope", quick=True, device="cpu")


def _tiny_config():
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                       num_key_value_heads=2, attention_bias=True, max_position_embeddings=64,
                       tie_word_embeddings=False, pad_token_id=0, bos_token_id=None, eos_token_id=None)


@pytest.mark.parametrize("q_len,k_len", [(7, 7), (3, 11), (1, 9)])
def test_math_baseline_matches_our_bottom_right_attention(q_len, k_len):
    g = torch.Generator().manual_seed(2)
    q = torch.randn(2, 4, q_len, 16, generator=g)
    k = torch.randn(2, 2, k_len, 16, generator=g)
    v = torch.randn(2, 2, k_len, 16, generator=g)
    assert torch.allclose(bench_attn.math_attention(q, k, v), attn.attention(q, k, v, causal=True), atol=1e-5)


def test_ceiling_gemms_follow_the_case_dtype():
    fp32 = [name for name, _, _ in bench_attn.gemm_ceiling_fns(torch.float32, "cpu")]
    bf16 = [name for name, _, _ in bench_attn.gemm_ceiling_fns(torch.bfloat16, "cpu")]
    assert fp32 and all(name.startswith("fp32") for name in fp32)
    assert any(name.startswith("bfloat16 torch.mm") for name in bf16)
    assert set(fp32) < set(bf16)  # bf16: the larger of the bf16 and the fp32 GEMMs


def test_ceiling_gemms_compute_the_product(monkeypatch):
    # The oneDNN candidate does the same work as torch.mm (a product of the same matrices).
    monkeypatch.setattr(bench_attn, "GEMM_SIZES", (64,))
    results = [(name, fn()) for name, flops, fn in bench_attn.gemm_ceiling_fns(torch.bfloat16, "cpu")]
    ref = results[0][1]
    for name, out in results:
        out = out.to_dense() if out.is_mkldnn else out
        assert torch.allclose(out.float(), ref, rtol=2e-2, atol=0.5), name


def test_read_ceiling_reads_the_case_bytes():
    fns = bench_attn.read_ceiling_fns(1 << 20, "cpu")
    assert all(nbytes == 1 << 20 for _, nbytes, _ in fns)
    assert float(fns[0][2]()) == (1 << 20) // 4


@pytest.mark.parametrize("kind,dtype", [("prefill", torch.bfloat16), ("decode", torch.bfloat16),
                                        ("fwdbwd", torch.float32)])
def test_kernel_case_records_fields_and_its_dtype_ceiling(monkeypatch, kind, dtype, check_spread):
    monkeypatch.setattr(bench_attn, "GEMM_SIZES", (64,))
    c = bench_attn.Case(f"{kind}_tiny", kind, dtype, 4, 2, 16, 64)
    case = bench_attn.run_case(c, quick=False, device="cpu")
    threads = pangu_core.get_num_threads()
    assert case["repeats"] == 7 and case["child_process"] is False and case["threads"] == threads
    assert case["shape"]["dtype"] == ("bfloat16" if dtype == torch.bfloat16 else "float32")
    assert case["ceiling_value"] == max(case["ceiling_candidates"].values())
    assert case["ceiling_fraction"] == pytest.approx(case["ours"] / case["ceiling_value"])
    check_spread(case)
    if kind == "decode":
        assert case["metric"] == "GB/s" and case["ceiling"].startswith("read:")
        assert case["bytes_read"] == 2 * 2 * 64 * 16 * 2
    else:
        assert case["metric"] == "GFLOP/s"
        names = set(case["ceiling_candidates"])
        assert any(n.startswith("bfloat16") for n in names) == (dtype == torch.bfloat16)
    assert "SDPA" in case["baseline"] and f"{threads} threads" in case["baseline"]


@pytest.mark.parametrize("kind", ["cuda", "npu"])
def test_missing_device_skips_every_case_with_the_reason(monkeypatch, kind):
    monkeypatch.setattr(device_module, "probe",
                        lambda k: device_module.DeviceInfo(k, False, 0, f"no {k} here (test)"))
    cases = bench_attn.run(quick=True, device=kind)
    names = [c.case for c in bench_attn.CASES] + list(bench_model.CASE_NAMES)
    assert [c["case"] for c in cases] == names
    for case in cases:
        assert case["skipped"] == f"no {kind} device: no {kind} here (test)"
        assert math.isnan(case["ours"]) and case["repeats"] == 0 and case["child_process"] is False
    assert "math attention" in cases[0]["baseline"]


def test_bad_device_is_refused():
    with pytest.raises(ValueError, match="device: expected one of cpu, cuda, npu"):
        bench_attn.run(quick=True, device="tpu")


def test_torch_runs_at_the_pool_threads_and_is_restored():
    before = torch.get_num_threads()
    pool = pangu_core.get_num_threads()
    torch.set_num_threads(pool + 1)
    try:
        with common.torch_threads() as threads:
            assert threads == pool == torch.get_num_threads()
        assert torch.get_num_threads() == pool + 1
    finally:
        torch.set_num_threads(before)
