"""Attention gradients against autograd of a float64 reference; custom-op registration checks."""

from __future__ import annotations

import pytest
import torch
from attention_reference import reference, reference_varlen

import pangu_core
from pangu_core import attention as attn
from pangu_core.attention import ops



def _leaves(*shapes, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=g).to(dtype).requires_grad_() for s in shapes]


def _grads(out, inputs, dout):
    return torch.autograd.grad(out, inputs, dout)


@pytest.mark.parametrize("isa", pangu_core.available_isas())
@pytest.mark.parametrize("config", [
    dict(b=2, h=4, hk=4, sq=7, sk=7, d=64, causal=True, window=0),
    dict(b=1, h=8, hk=2, sq=97, sk=97, d=80, causal=True, window=0),
    dict(b=1, h=4, hk=1, sq=33, sk=130, d=59, causal=False, window=0),
    dict(b=2, h=4, hk=2, sq=40, sk=90, d=64, causal=True, window=17),
], ids=["mha-7", "gqa4-97", "mqa-odd", "window"])
def test_gradients_match_float64_autograd(isa, config):
    # Invariant: dq, dk, dv by recomputation equal autograd through the float64 reference, with GQA
    # gradients summed over each kv group and masked keys getting zero gradient.
    c = config
    q, k, v = _leaves((c["b"], c["h"], c["sq"], c["d"]), (c["b"], c["hk"], c["sk"], c["d"]),
                      (c["b"], c["hk"], c["sk"], c["d"]), seed=1)
    lens = torch.tensor([c["sk"], max(c["sk"] - 9, 0)][: c["b"]])
    dout = torch.randn(c["b"], c["h"], c["sq"], c["d"], generator=torch.Generator().manual_seed(2))
    pangu_core.set_isa(isa)
    try:
        out = attn.attention(q, k, v, causal=c["causal"], window=c["window"] or None, kv_lens=lens)
        ours = _grads(out, (q, k, v), dout)
    finally:
        pangu_core.reset_isa()
    q64, k64, v64 = (x.detach().double().requires_grad_() for x in (q, k, v))
    expected_out = reference(q64, k64, v64, causal=c["causal"], window=c["window"], kv_lens=lens)
    expected = _grads(expected_out, (q64, k64, v64), dout.double())
    for name, a, e in zip("qkv", ours, expected):
        err = (a.double() - e).abs().max().item()
        assert err < 5e-5 * max(1.0, e.abs().max().item()), f"d{name} error {err}"


@pytest.mark.sanitize
def test_varlen_gradients_match_reference():
    # Invariant: packed-sequence gradients equal the per-sequence reference's.
    q, k, v = _leaves((45, 4, 64), (60, 2, 64), (60, 2, 64), seed=3)
    cu_q = torch.tensor([0, 5, 45], dtype=torch.int32)
    cu_k = torch.tensor([0, 20, 60], dtype=torch.int32)
    dout = torch.randn(45, 4, 64, generator=torch.Generator().manual_seed(4))
    ours = _grads(attn.attention_varlen(q, k, v, cu_q, cu_k, causal=True), (q, k, v), dout)
    q64, k64, v64 = (x.detach().double().requires_grad_() for x in (q, k, v))
    expected = _grads(reference_varlen(q64, k64, v64, cu_q, cu_k, causal=True), (q64, k64, v64), dout.double())
    for a, e in zip(ours, expected):
        assert (a.double() - e).abs().max().item() < 5e-5


def test_bfloat16_gradients_close_to_reference():
    # Invariant: bfloat16 training gradients stay within bfloat16 rounding of the float64 ones.
    q, k, v = _leaves((1, 4, 50, 64), (1, 2, 50, 64), (1, 2, 50, 64), dtype=torch.bfloat16, seed=5)
    dout = torch.randn(1, 4, 50, 64, generator=torch.Generator().manual_seed(6)).bfloat16()
    ours = _grads(attn.attention(q, k, v, causal=True), (q, k, v), dout)
    q64, k64, v64 = (x.detach().double().requires_grad_() for x in (q, k, v))
    expected = _grads(reference(q64, k64, v64, causal=True), (q64, k64, v64), dout.double())
    for a, e in zip(ours, expected):
        assert a.dtype == torch.bfloat16
        assert (a.double() - e).abs().max().item() < 0.02 * max(1.0, e.abs().max().item())


def test_custom_ops_pass_opcheck():
    # Invariant: the ops' schemas, fake kernels and autograd registrations are consistent (what
    # torch.compile relies on).
    q, k, v = _leaves((1, 4, 9, 64), (1, 2, 9, 64), (1, 2, 9, 64), seed=7)
    torch.library.opcheck(ops.attention_forward, (q, k, v, None, True, 0.125, 0))
    cu = torch.tensor([0, 4, 9], dtype=torch.int32)
    qv, kv, vv = _leaves((9, 4, 64), (9, 2, 64), (9, 2, 64), seed=8)
    torch.library.opcheck(ops.attention_varlen_forward, (qv, kv, vv, cu, cu, True, 0.125, 0))


def test_traces_and_trains_under_torch_compile():
    # Invariant: a module calling the op compiles without graph breaks and its gradients match eager.
    torch._dynamo.reset()
    q, k, v = _leaves((1, 4, 16, 64), (1, 2, 16, 64), (1, 2, 16, 64), seed=9)

    def f(q, k, v):
        return attn.attention(q, k, v, causal=True).square().sum()

    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    loss = compiled(q, k, v)
    grads = torch.autograd.grad(loss, (q, k, v))
    eager_grads = torch.autograd.grad(f(q, k, v), (q, k, v))
    for a, e in zip(grads, eager_grads):
        assert torch.allclose(a, e, atol=1e-6)
