"""Folder merges: sharded safetensors round trip, a tiny Llama merged from files, errors, atomicity, output
dtypes, input digests, sliced streaming."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

from pangu_core.merge import (INDEX_NAME, RECORD_NAME, Checkpoint, CopyRule, MergeConfig, ModelSpec, file_sha256,
                              file_xxh64, load_checkpoint, merge_checkpoints, merge_state_dicts, save_checkpoint)
from pangu_core.merge import files as merge_files


def _state_dict(seed: int, shapes=None) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shapes = shapes or {"a.weight": (33, 17), "b.weight": (100, 7), "c.bias": (5,), "d.weight": (64, 64)}
    sd = {n: torch.randn(s, generator=g).to(torch.bfloat16) for n, s in shapes.items()}
    sd["counter"] = torch.tensor([seed, 2], dtype=torch.int64)
    return sd


@pytest.fixture
def three(tmp_path):
    """base, m1, m2 saved sharded (small shards), plus their state dicts."""
    sds = {name: _state_dict(i) for i, name in enumerate(["base", "m1", "m2"])}
    paths = {}
    for name, sd in sds.items():
        paths[name] = save_checkpoint(sd, tmp_path / name, max_shard_bytes=5000)
        (tmp_path / name / "config.json").write_text(json.dumps({"model_type": "x", "torch_dtype": "float32"}))
        (tmp_path / name / "tokenizer.json").write_text("{}")
    return sds, paths


def _ties(paths, **kw):
    return MergeConfig(method="ties", base_model=paths["base"],
                       models=(ModelSpec(paths["m1"], 0.6, 0.5), ModelSpec(paths["m2"], 0.4, 0.7)), **kw)


# Sharded write then read returns the same tensors; the safetensors library reads our shards too.
def test_sharded_round_trip(three, tmp_path):
    sds, paths = three
    index = json.loads((tmp_path / "base" / INDEX_NAME).read_text())
    assert len(set(index["weight_map"].values())) > 1
    loaded = load_checkpoint(paths["base"])
    assert set(loaded) == set(sds["base"]) and all(torch.equal(loaded[k], sds["base"][k]) for k in loaded)
    from safetensors.torch import load_file

    for file in set(index["weight_map"].values()):
        for k, v in load_file(str(tmp_path / "base" / file)).items():
            assert torch.equal(v, sds["base"][k])


# A folder merge equals the in-memory merge; metadata, side files and input hashes are recorded.
def test_folder_merge_matches_state_dict_merge(three, tmp_path):
    sds, paths = three
    config = _ties(paths, dtype="float32", max_shard_bytes=6000)
    out = merge_checkpoints(config, tmp_path / "out", progress=False, threads=2)
    merged = load_checkpoint(out)
    named = {paths[k]: v for k, v in sds.items()}
    reference = merge_state_dicts(named, config)
    assert set(merged) == set(reference)
    for k in merged:
        assert torch.equal(merged[k], reference[k]), k
    assert merged["a.weight"].dtype == torch.float32 and merged["counter"].dtype == torch.int64
    index = json.loads((tmp_path / "out" / INDEX_NAME).read_text())
    record = index["metadata"]["pangu_merge"]
    files = [f for p in paths.values() for f in Checkpoint(p).files]
    assert record["method"] == "ties" and sorted(record["input_xxh64"]) == sorted(files)
    for file, digest in record["input_xxh64"].items():
        assert file_xxh64(file) == digest
    assert "input_sha256" not in record and record["config"]["input_hash"] == "xxh64"
    assert len(set(index["weight_map"].values())) > 1
    assert json.loads((tmp_path / "out" / "config.json").read_text())["torch_dtype"] == "float32"
    assert (tmp_path / "out" / "tokenizer.json").is_file()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]


# A tiny transformers Llama merged from files loads, and its logits equal the reference merge's.
def test_tiny_llama_merge_loads_with_reference_logits(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    models = []
    for seed, name in enumerate(["base", "r1", "r2"]):
        torch.manual_seed(seed)
        model = transformers.LlamaForCausalLM(config).eval()
        model.save_pretrained(tmp_path / name)
        models.append(model)
    merge_config = MergeConfig(method="dare_ties", base_model=str(tmp_path / "base"), seed=4, density=0.7,
                               models=(ModelSpec(str(tmp_path / "r1"), 0.5), ModelSpec(str(tmp_path / "r2"), 0.5)))
    out = merge_checkpoints(merge_config, tmp_path / "merged", progress=False)
    merged = transformers.LlamaForCausalLM.from_pretrained(out).eval()
    sources = {str(tmp_path / n): load_checkpoint(tmp_path / n) for n in ["base", "r1", "r2"]}
    reference_sd = merge_state_dicts(sources, merge_config)
    reference = transformers.LlamaForCausalLM(config).eval()
    missing, unexpected = reference.load_state_dict(reference_sd, strict=False)
    assert not unexpected and all("rotary" in m for m in missing)
    ids = torch.randint(0, 64, (2, 11), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got, want = merged(ids).logits, reference(ids).logits
        base_logits = models[0](ids).logits
    assert torch.equal(got, want)
    assert not torch.allclose(got, base_logits)


# All name and shape mismatches across inputs are reported at once, naming tensors and files.
def test_mismatches_reported_together(tmp_path):
    base = _state_dict(0)
    other = _state_dict(1, {"a.weight": (33, 18), "b.weight": (100, 7), "c.bias": (5,), "e.weight": (2,)})
    save_checkpoint(base, tmp_path / "base")
    save_checkpoint(other, tmp_path / "other")
    config = MergeConfig(method="task_arithmetic", base_model=str(tmp_path / "base"),
                         models=(ModelSpec(str(tmp_path / "other")),))
    with pytest.raises(ValueError) as info:
        merge_checkpoints(config, tmp_path / "out", progress=False)
    text = str(info.value)
    assert "3 problems" in text
    assert "d.weight: missing from" in text and "e.weight: in " in text and "model-00001-of-00001.safetensors" in text
    assert "a.weight: shape [33, 18] in " in text and str(tmp_path / "other") in text
    assert not (tmp_path / "out").exists()


# An existing output is refused unless overwrite; with overwrite it is replaced.
def test_existing_output(three, tmp_path):
    _, paths = three
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep").write_text("x")
    with pytest.raises(FileExistsError, match="overwrite"):
        merge_checkpoints(_ties(paths), tmp_path / "out", progress=False)
    assert (tmp_path / "out" / "keep").is_file()
    merge_checkpoints(_ties(paths), tmp_path / "out", progress=False, overwrite=True)
    assert not (tmp_path / "out" / "keep").exists() and (tmp_path / "out" / INDEX_NAME).is_file()


# NaN/Inf in an output names the tensor and leaves nothing behind.
def test_nonfinite_output_leaves_nothing(three, tmp_path):
    sds, paths = three
    bad = dict(sds["m1"])
    bad["b.weight"] = bad["b.weight"].clone()
    bad["b.weight"][3, 2] = float("nan")
    save_checkpoint(bad, tmp_path / "bad")
    config = MergeConfig(method="task_arithmetic", base_model=paths["base"], models=(ModelSpec(str(tmp_path / "bad")),))
    with pytest.raises(ValueError, match="b.weight: the merged tensor holds 1 NaN"):
        merge_checkpoints(config, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]


# An exception mid-merge leaves no output folder and no temporary folder.
def test_exception_mid_merge_leaves_no_output(three, tmp_path, monkeypatch):
    _, paths = three
    real, calls = merge_files.merge_one, []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("injected")
        return real(*args, **kwargs)

    monkeypatch.setattr(merge_files, "merge_one", failing)
    with pytest.raises(RuntimeError, match="injected"):
        merge_checkpoints(_ties(paths), tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]


# A merge process killed mid-write leaves no output; its leftover temporary folder is no checkpoint.
def test_killed_process_leaves_no_valid_output(three, tmp_path):
    _, paths = three
    script = textwrap.dedent(f"""
        import os, signal
        from pangu_core.merge import MergeConfig, ModelSpec
        from pangu_core.merge import files as merge_files
        real, calls = merge_files.merge_one, []
        def dying(*a, **k):
            calls.append(1)
            if len(calls) == 3:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(*a, **k)
        merge_files.merge_one = dying
        config = MergeConfig(method="ties", base_model={paths['base']!r}, models=(ModelSpec({paths['m1']!r}),))
        merge_files.merge_checkpoints(config, {str(tmp_path / 'out')!r}, progress=False)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert result.returncode == -9, result.stderr.decode()
    assert not (tmp_path / "out").exists()
    leftovers = [p for p in os.listdir(tmp_path) if p.startswith(".out.tmp")]
    assert leftovers
    for left in leftovers:
        # Loaders (transformers, ours with an index) need the index or model.safetensors: neither exists.
        names = os.listdir(tmp_path / left)
        assert INDEX_NAME not in names and "model.safetensors" not in names


def test_bad_inputs(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no \\*.safetensors file"):
        Checkpoint(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        Checkpoint(tmp_path / "missing")
    (tmp_path / "junk.safetensors").write_bytes(b"\xff" * 16)
    with pytest.raises(ValueError, match="is not a safetensors file"):
        Checkpoint(tmp_path / "junk.safetensors")
    config = MergeConfig(method="linear", models=(ModelSpec("x"),))
    with pytest.raises(ValueError, match="threads: expected an int >= 1"):
        merge_checkpoints(config, tmp_path / "o", threads=0)
    with pytest.raises(TypeError, match="config: expected a MergeConfig"):
        merge_checkpoints({"method": "linear"}, tmp_path / "o")


# The writer thread under stress: many tensors through a shallow queue, every byte where it belongs.
@pytest.mark.sanitize
def test_writer_stress_checksums(tmp_path):
    g = torch.Generator().manual_seed(3)
    sd = {f"t{i}": torch.randn(int(torch.randint(1, 3000, (1,), generator=g)), generator=g) for i in range(300)}
    save_checkpoint(sd, tmp_path / "many", max_shard_bytes=50_000)
    loaded = load_checkpoint(tmp_path / "many")
    assert sum(float(v.double().sum()) for v in loaded.values()) == sum(float(v.double().sum()) for v in sd.values())
    assert all(torch.equal(loaded[k], sd[k]) for k in sd)


# XXH64 matches the published algorithm's values (computed with the reference implementation), at
# every length path (< 4, < 8, < 32 and stripes) and seed, and a file hashed in windows of any
# size gives the digest of its bytes.
def test_xxh64_reference_values(tmp_path):
    from pangu_core import _core

    known = {b"": "ef46db3751d8e999", b"a": "d24ec4f1a98c6e5b", b"abc": "44bc2cf5ad770999",
             b"pangu_core merge": "ef3b093375b0aaf9", bytes(range(256)) * 4: "6f3914f18fe4df57"}
    for data, digest in known.items():
        assert f"{_core.merge.xxh64(data):016x}" == digest
        path = tmp_path / f"f{len(data)}"
        path.write_bytes(data)
        assert file_xxh64(str(path)) == digest
        for window in (1, 4096, 12288):
            assert _core.merge.file_xxh64(str(path), window) == digest
    assert _core.merge.xxh64(b"abc", 2**64 - 1) == 2895935887265243510
    assert _core.merge.xxh64(bytes(range(256)) * 4, 2**64 - 1) == 6993049869127395555
    big = bytes(range(251)) * 40000  # ~10 MB: several 4 KB windows, a partial last one
    (tmp_path / "big").write_bytes(big)
    assert _core.merge.file_xxh64(str(tmp_path / "big"), 4096) == f"{_core.merge.xxh64(big):016x}"
    with pytest.raises(ValueError, match="cannot open"):
        _core.merge.file_xxh64(str(tmp_path / "missing"))


# input_hash picks the recorded digest (SHA-256 still available) or none; the argument overrides the config.
def test_input_hash_options(three, tmp_path):
    _, paths = three
    files = [f for p in paths.values() for f in Checkpoint(p).files]
    out = merge_checkpoints(_ties(paths, input_hash="sha256"), tmp_path / "sha", progress=False)
    record = json.loads((tmp_path / "sha" / RECORD_NAME).read_text())
    assert sorted(record["input_sha256"]) == sorted(files) and "input_xxh64" not in record
    assert all(file_sha256(f) == d for f, d in record["input_sha256"].items())
    for name, config, argument in (("none", _ties(paths, input_hash="none"), None),
                                   ("off", _ties(paths), "none")):
        merge_checkpoints(config, tmp_path / name, progress=False, input_hash=argument)
        record = json.loads((tmp_path / name / RECORD_NAME).read_text())
        assert not [k for k in record if k.startswith("input_")]
    assert load_checkpoint(out).keys() == load_checkpoint(tmp_path / "none").keys()
    with pytest.raises(ValueError, match="input_hash: expected one of 'xxh64', 'sha256', 'none', got 'md5'"):
        _ties(paths, input_hash="md5")
    with pytest.raises(ValueError, match="input_hash: expected one of xxh64, sha256, none or None, got 'md5'"):
        merge_checkpoints(_ties(paths), tmp_path / "md5", input_hash="md5")


# Elementwise methods stream in slices (through reused buffers, tensors cut mid-way, a DARE draw
# by its position in the whole tensor): the files hold exactly what an in-memory merge gives.
@pytest.mark.sanitize
@pytest.mark.parametrize("method", ["linear", "task_arithmetic", "dare_linear", "dare_ties"])
def test_sliced_stream_equals_in_memory(three, tmp_path, monkeypatch, method):
    sds, paths = three
    monkeypatch.setattr(merge_files, "SLICE_ELEMENTS", 1000)  # d.weight: 4096 = 4 slices + a partial one
    for sd in sds.values():  # an int64 buffer wider than a ring buffer's float32 slice: half slices
        sd["steps"] = torch.arange(2500, dtype=torch.int64)
    for name, sd in sds.items():
        shutil.rmtree(paths[name])
        save_checkpoint(sd, paths[name], max_shard_bytes=5000)
    config = MergeConfig(method=method, base_model=None if method == "linear" else paths["base"], density=0.6,
                         models=(ModelSpec(paths["m1"], 0.6), ModelSpec(paths["m2"], 0.4)), seed=3,
                         copy_tensors=(CopyRule("c.bias", paths["m2"]),), dtype="float32")
    assert config.method_spec().elementwise
    out = merge_checkpoints(config, tmp_path / "out", progress=False, threads=2)
    merged = load_checkpoint(out)
    reference = merge_state_dicts({paths[k]: v for k, v in sds.items()}, config)
    assert set(merged) == set(reference)
    for k in merged:
        assert torch.equal(merged[k], reference[k]), k
    assert merged["c.bias"].dtype == torch.float32 and torch.equal(merged["c.bias"], sds["m2"]["c.bias"].float())


# Slice pages are dropped as the stream goes (the page straddling a slice start included), and a
# range can be mapped in one call; the views stay valid (pages fault back in from the file).
def test_populate_and_release_slices(three):
    sds, paths = three
    c = Checkpoint(paths["m1"])
    before = c.tensor("d.weight").clone()
    c.populate("d.weight", 100, 3000)
    c.release("d.weight", 100, 3000)
    c.release("d.weight")
    assert torch.equal(c.tensor("d.weight"), before) and torch.equal(before, sds["m1"]["d.weight"])


# copy_tensors: a copied tensor is written in the output dtype like every other floating tensor, by
# the streaming folder merge and the in-memory merge alike; without dtype, in the base's dtype.
@pytest.mark.parametrize("dtype", ["float32", "float16", None])
def test_copied_tensors_follow_output_dtype(three, tmp_path, dtype):
    sds, paths = three
    m2 = {k: (v.float() if k == "c.bias" else v) for k, v in sds["m2"].items()}  # a float32 copy source
    path = save_checkpoint(m2, tmp_path / "m2_f32")
    config = MergeConfig(method="task_arithmetic", base_model=paths["base"], models=(ModelSpec(path),),
                         copy_tensors=(CopyRule("c.bias", path),), dtype=dtype)
    merged = load_checkpoint(merge_checkpoints(config, tmp_path / "out", progress=False))
    in_memory = merge_state_dicts({paths["base"]: sds["base"], path: m2}, config)
    want = torch.bfloat16 if dtype is None else getattr(torch, dtype)  # the base stores bfloat16
    for result in (merged, in_memory):
        assert result["c.bias"].dtype == want and result["a.weight"].dtype == want
        assert torch.equal(result["c.bias"], m2["c.bias"].to(want))
        assert result["counter"].dtype == torch.int64
    assert all(torch.equal(merged[k], in_memory[k]) for k in merged)


# save_checkpoint writes through safetensors: tied (shared) tensors, non-contiguous views and a single
# file load back; an existing folder and bad values are refused before anything is written.
def test_save_and_load_checkpoint(tmp_path):
    weight = torch.randn(6, 4)
    sd = {"embed": weight, "lm_head": weight, "t": torch.randn(4, 6).t(), "ids": torch.arange(5)}
    out = save_checkpoint(sd, tmp_path / "tied", metadata={"format": "pt", "step": "3"})
    loaded = load_checkpoint(out)
    assert set(loaded) == set(sd) and all(torch.equal(loaded[k], sd[k]) for k in sd)
    from safetensors import safe_open

    with safe_open(str(tmp_path / "tied" / "model-00001-of-00001.safetensors"), "pt") as f:
        assert f.metadata()["step"] == "3"
    single = load_checkpoint(tmp_path / "tied" / "model-00001-of-00001.safetensors")
    assert torch.equal(single["lm_head"], weight)
    with pytest.raises(FileExistsError, match="out_dir: .* exists"):
        save_checkpoint(sd, tmp_path / "tied")
    with pytest.raises(ValueError, match="max_shard_bytes: expected an int >= 1, got 0"):
        save_checkpoint(sd, tmp_path / "x", max_shard_bytes=0)
    with pytest.raises(TypeError, match=r"state_dict\['a'\]: expected a CPU torch.Tensor"):
        save_checkpoint({"a": [1.0]}, tmp_path / "x")
    with pytest.raises(TypeError, match="state_dict: expected a mapping of name -> tensor, got list"):
        save_checkpoint([weight], tmp_path / "x")
    assert not (tmp_path / "x").exists() and not [p for p in os.listdir(tmp_path) if p.startswith(".")]
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "model.safetensors").write_bytes(b"\xff" * 16)
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_checkpoint(tmp_path / "junk")
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing")


# A merge never writes onto one of its own inputs, even with overwrite.
def test_output_onto_input_refused(three):
    _, paths = three
    with pytest.raises(ValueError, match="out_dir: .* is one of the inputs"):
        merge_checkpoints(_ties(paths), paths["m1"], overwrite=True, progress=False)
    assert load_checkpoint(paths["m1"])
