"""In-memory merges of named tensors and state dicts: overrides, copied tensors, output dtypes,
pass-through buffers and mismatch reports."""

from __future__ import annotations

import pytest
import torch

from pangu_core.merge import CopyRule, MergeConfig, ModelSpec, Override, merge_one, merge_state_dicts


# State dicts: overrides and copied tensors; integer buffers pass through; mismatches listed at once.
def test_merge_state_dicts_overrides_copy_and_mismatch():
    g = torch.Generator().manual_seed(0)
    sds = {k: {"attn.w": torch.randn(8, 8, generator=g), "mlp.w": torch.randn(8, 8, generator=g),
               "embed": torch.randn(4, 8, generator=g), "steps": torch.tensor([k == "a"], dtype=torch.int64)}
           for k in ("a", "b")}
    config = MergeConfig(method="slerp", base_model="a", models=(ModelSpec("a"), ModelSpec("b")), t=0.5,
                         overrides=(Override("attn", t=0.0),), copy_tensors=(CopyRule("embed", "b"),))
    merged = merge_state_dicts(sds, config)
    assert torch.equal(merged["attn.w"], sds["a"]["attn.w"])  # t = 0: the base
    assert torch.equal(merged["embed"], sds["b"]["embed"])
    assert torch.equal(merged["steps"], sds["a"]["steps"])
    assert not torch.equal(merged["mlp.w"], sds["a"]["mlp.w"])
    broken = {"a": dict(sds["a"]), "b": dict(sds["b"])}
    broken["b"]["mlp.w"] = torch.zeros(8, 9)
    del broken["b"]["embed"]
    broken["b"]["extra"] = torch.zeros(1)
    with pytest.raises(ValueError) as info:
        merge_state_dicts(broken, config)
    text = str(info.value)
    assert "3 problems" in text and "embed: missing from b" in text and "extra: in state dict 'b'" in text
    assert "mlp.w: shape [8, 9] in state dict 'b', [8, 8] in state dict 'a'" in text
    with pytest.raises(KeyError, match="no state dict for"):
        merge_state_dicts({"a": sds["a"]}, config)


# dtype is the OUTPUT dtype of every floating tensor: merged, copied and passed through (float64);
# integer buffers keep theirs. Without dtype each tensor takes the base's dtype, copied ones included.
def test_output_dtype_of_merged_copied_and_passed_tensors():
    g = torch.Generator().manual_seed(1)
    sds = {k: {"w": torch.randn(6, 5, generator=g).to(torch.bfloat16), "embed": torch.randn(4, 5, generator=g),
               "freq": torch.randn(3, generator=g, dtype=torch.float64), "ids": torch.arange(3)}
           for k in ("base", "a")}
    config = MergeConfig(method="task_arithmetic", base_model="base", models=(ModelSpec("a"),),
                         copy_tensors=(CopyRule("embed", "a"),), dtype="float16")
    merged = merge_state_dicts(sds, config)
    assert {k: v.dtype for k, v in merged.items()} == {"w": torch.float16, "embed": torch.float16,
                                                       "freq": torch.float16, "ids": torch.int64}
    assert torch.equal(merged["embed"], sds["a"]["embed"].to(torch.float16))
    assert torch.equal(merged["freq"], sds["base"]["freq"].to(torch.float16))
    sds["base"]["embed"] = sds["base"]["embed"].to(torch.bfloat16)  # the base stores it in bfloat16
    default = merge_state_dicts(sds, config.replace(dtype=None))
    assert default["w"].dtype == torch.bfloat16 and default["freq"].dtype == torch.float64
    assert torch.equal(default["embed"], sds["a"]["embed"].to(torch.bfloat16))
    # merge_one gives the same tensor when writing into a caller's buffer
    out = torch.empty(4, 5, dtype=torch.float16)
    assert torch.equal(merge_one(config, "embed", {k: v["embed"] for k, v in sds.items()}, out=out), merged["embed"])


# Front-door errors of merge_state_dicts name the argument.
def test_merge_state_dicts_errors():
    config = MergeConfig(method="linear", models=(ModelSpec("a"),))
    with pytest.raises(TypeError, match="config: expected a MergeConfig, got dict"):
        merge_state_dicts({"a": {}}, {"method": "linear"})
    with pytest.raises(TypeError, match="state_dicts: expected a mapping"):
        merge_state_dicts([{}], config)
