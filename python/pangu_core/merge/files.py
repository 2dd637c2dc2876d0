"""Streaming merges of checkpoint folders: mmap safetensors in, sharded safetensors out, atomically.

The merge streams: input tensors are zero-copy views of the memory-mapped files
(:class:`~pangu_core.merge.checkpoint.Checkpoint`), mapped a range at a time in one call (populate)
and dropped from the process once used; the C++ kernel writes into an output buffer, and a C++
writer thread writes that buffer to its shard while the next piece is computed.

Methods whose output elements depend only on the inputs at the same position (linear, task
arithmetic, DARE; see ``MergeMethod.elementwise``) and copied tensors go in flat slices of
``SLICE_ELEMENTS`` elements through ``WRITE_DEPTH + 1`` reused output buffers, so large tensors never
sit in memory whole and no fresh output page is ever faulted in. Slerp and TIES (whose top-k trim
needs the whole tensor) go tensor by tensor into fresh buffers.

Peak memory (besides the interpreter and torch), independent of the checkpoint size:
  sliced methods:  (N + 1) * SLICE_ELEMENTS * 4 bytes mapped input pages (N merged inputs and the
                   base, at most float32) + (WRITE_DEPTH + 1) * SLICE_ELEMENTS * 4 bytes of output
                   buffers: about 40 MB for three models;
  tensor by tensor: (N + 1) * largest_tensor mapped pages + (WRITE_DEPTH + 1) output tensors.
The input hasher (``input_hash``) maps one 8 MB window of a file at a time.

Atomicity: everything is written into a hidden sibling folder that is renamed onto ``out_dir`` only
after the last byte; the index file is written last, so even that folder never loads as a complete
checkpoint while a merge runs. A failed merge deletes it.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import torch

import pangu_core
from pangu_core import _core
from pangu_core.merge.checkpoint import (FILE_HASHES, INDEX_NAME, Checkpoint, header_json, plan_shards,
                                         shard_name)
from pangu_core.merge.config import INPUT_HASHES, InputHash, MergeConfig
from pangu_core.merge.in_memory import check_same_tensors, merge_one
from pangu_core.tensors import element_size, numel

RECORD_NAME = "pangu_merge.json"
WRITE_DEPTH = 2
SLICE_ELEMENTS = 1 << 20  # per slice: small enough for the caches, large enough to amortise the calls
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack")


def _copy_side_files(reference: Checkpoint, tmp: Path, dtype: str | None) -> None:
    """The reference's config, tokenizer and other non-weight files, config.json's dtype updated."""
    if reference.folder is None:
        return
    for item in reference.folder.iterdir():
        if not item.is_file() or item.name == INDEX_NAME or item.name.endswith(_WEIGHT_SUFFIXES):
            continue
        shutil.copy2(item, tmp / item.name)
    config = tmp / "config.json"
    if dtype and config.is_file():
        with open(config, encoding="utf-8") as f:
            data = json.load(f)
        for key in ("torch_dtype", "dtype"):
            if key in data:
                data[key] = dtype
        with open(config, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)


class _Hasher(threading.Thread):
    """Hashes the input files in the background while the merge runs."""

    def __init__(self, files: list[str], algorithm: str):
        super().__init__(daemon=True)
        self.files, self.hash, self.result, self.error = files, FILE_HASHES[algorithm], {}, None

    def run(self) -> None:
        try:
            for f in self.files:
                self.result[f] = self.hash(f)
        except (OSError, ValueError) as exc:
            self.error = exc


def merge_checkpoints(
    config: MergeConfig,
    out_dir: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    threads: int | None = None,
    progress: bool = True,
    durable: bool = True,
    input_hash: InputHash | None = None,
) -> str:
    """Merges the checkpoints named by ``config`` into ``out_dir``; returns its path.

    Refuses an existing ``out_dir`` unless ``overwrite`` (FileExistsError), and an ``out_dir`` that
    is one of the inputs. Checks every input for the same tensor names and shapes first and reports
    all mismatches at once. Every floating tensor is written in ``config.dtype`` (the OUTPUT dtype;
    accumulation is float32) or, without one, in the base's (else the first model's) dtype of that
    tensor; config.json's dtype is updated to match. ``threads`` sets the kernel threads for this
    call (their helpers sleep between calls, leaving the cores to the writer and hasher threads).
    ``durable`` fsyncs the shards before the rename (survives a power loss, not only a killed
    process). ``input_hash`` (default: ``config.input_hash``, XXH64 unless set) records each input
    file's digest in the output's metadata as ``input_<algorithm>``; "none" records none.
    Raises ValueError naming a tensor whose merge holds NaN or infinity; nothing is left at out_dir.
    """
    if not isinstance(config, MergeConfig):
        raise TypeError(f"config: expected a MergeConfig, got {type(config).__name__}")
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise FileExistsError(f"out_dir: {out} exists; pass overwrite=True (--overwrite) to replace it")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads: expected an int >= 1, got {threads!r}")
    if input_hash is not None and input_hash not in INPUT_HASHES:
        raise ValueError(f"input_hash: expected one of {', '.join(INPUT_HASHES)} or None, got {input_hash!r}")
    sources = config.sources()
    if any(Path(s).resolve() == out.resolve() for s in sources):
        raise ValueError(f"out_dir: {out} is one of the inputs; choose another folder")
    checkpoints = {s: Checkpoint(s) for s in sources}
    check_same_tensors({s: c.shapes() for s, c in checkpoints.items()})
    reference = checkpoints[config.reference()]
    names = list(reference.entries)
    plan = plan_shards([(n, config.output_dtype(reference.entries[n][1]), reference.entries[n][2]) for n in names],
                       config.max_shard_bytes)
    record: dict[str, Any] = {"method": config.method, "config": config.to_dict(), "pangu_core": pangu_core.__version__}
    metadata = {"format": "pt", "pangu_merge": json.dumps(record, sort_keys=True)}
    files = [f for c in checkpoints.values() for f in c.files]
    algorithm = config.input_hash if input_hash is None else input_hash
    hasher = _Hasher(files, algorithm) if algorithm != "none" else None
    if hasher:
        hasher.start()

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    previous_threads = pangu_core.get_num_threads()
    try:
        if threads is not None:
            pangu_core.set_num_threads(threads)
        weight_map = _stream(config, checkpoints, plan, metadata, tmp, progress, durable)
        _copy_side_files(reference, tmp, config.dtype)
        if hasher:
            hasher.join()
            if hasher.error:
                raise hasher.error
            record[f"input_{algorithm}"] = hasher.result
        total = sum(e - b for shard in plan for _, _, _, b, e in shard)
        with open(tmp / RECORD_NAME, "w", encoding="utf-8") as f:
            json.dump(record, f, indent=2)
        with open(tmp / INDEX_NAME, "w", encoding="utf-8") as f:  # last: only now is tmp a checkpoint
            json.dump({"metadata": {"total_size": total, "pangu_merge": record}, "weight_map": weight_map}, f, indent=2)
        _replace(tmp, out, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        pangu_core.set_num_threads(previous_threads)
    return str(out)


class _OutputRing:
    """``WRITE_DEPTH + 1`` output buffers of ``SLICE_ELEMENTS`` float32, handed out in turn.

    A writer holds at most ``WRITE_DEPTH`` queued tensors and drops one from its queue only once it
    is written; a shard's writer is closed (drained) before the next one opens. So when a buffer
    comes round again, the slice it held ``WRITE_DEPTH + 1`` submissions ago is on disk.
    """

    def __init__(self) -> None:
        self.buffers: list[torch.Tensor] = []
        self.turn = 0

    def take(self, count: int, dtype: torch.dtype) -> torch.Tensor:
        if not self.buffers:  # first use: fault the pages in once, then reuse them for every slice
            self.buffers = [torch.empty(SLICE_ELEMENTS * 4, dtype=torch.uint8) for _ in range(WRITE_DEPTH + 1)]
        buffer = self.buffers[self.turn]
        self.turn = (self.turn + 1) % len(self.buffers)
        return buffer[: count * element_size(dtype)].view(dtype)


def _stream(config: MergeConfig, checkpoints: dict[str, Checkpoint], plan: list[list], metadata: dict[str, str],
            tmp: Path, progress: bool, durable: bool) -> dict[str, str]:
    from tqdm import tqdm

    weight_map: dict[str, str] = {}
    order = [entry for shard in plan for entry in shard]
    sliced = config.method_spec().elementwise
    ring = _OutputRing()
    bar = tqdm(total=len(order), desc="merge", unit="tensor", disable=not progress)
    start, moved = time.perf_counter(), 0
    position = 0
    try:
        for index, shard in enumerate(plan):
            file_name = shard_name(index, len(plan))
            writer = _core.merge.SafetensorsWriter(str(tmp / file_name), header_json(shard, metadata), WRITE_DEPTH)
            try:
                for name, dtype, shape, begin, _ in shard:
                    if position + 1 < len(order):  # readahead when the page cache is cold
                        for c in checkpoints.values():
                            c.prefetch(order[position + 1][0])
                    count = numel(shape)
                    if sliced and count > 0:
                        moved += _merge_slices(config, checkpoints, name, dtype, count, begin, writer, ring)
                    else:
                        for c in checkpoints.values():
                            c.populate(name)
                        inputs = {s: c.tensor(name) for s, c in checkpoints.items()}
                        result = torch.empty(shape, dtype=dtype)
                        merge_one(config, name, inputs, out=result)
                        writer.submit(result, begin)
                        moved += sum(t.nbytes for t in inputs.values()) + result.nbytes
                        del inputs, result
                        for c in checkpoints.values():
                            c.release(name)
                    weight_map[name] = file_name
                    position += 1
                    bar.update(1)
                    bar.set_postfix_str(f"{moved / max(time.perf_counter() - start, 1e-9) / 1e9:.2f} GB/s", refresh=False)
                writer.close(durable)
            finally:
                del writer  # joins the writer thread (after a failure: without fsync)
    finally:
        bar.close()
    return weight_map


def _merge_slices(config: MergeConfig, checkpoints: dict[str, Checkpoint], name: str, dtype: torch.dtype,
                  count: int, begin: int, writer: Any, ring: _OutputRing) -> int:
    """Merges tensor ``name`` in flat slices into ring buffers, each written at its offset; returns
    the bytes read and written."""
    flat = {s: c.tensor(name).reshape(-1) for s, c in checkpoints.items()}
    size = element_size(dtype)
    step = SLICE_ELEMENTS * 4 // max(4, size)  # a ring buffer holds SLICE_ELEMENTS float32 (int64: half)
    moved = 0
    for lo in range(0, count, step):
        hi = min(count, lo + step)
        for c in checkpoints.values():
            c.populate(name, lo, hi)
        inputs = {s: t[lo:hi] for s, t in flat.items()}
        result = ring.take(hi - lo, dtype)
        merge_one(config, name, inputs, out=result, first_index=lo)
        writer.submit(result, begin + lo * size)
        moved += sum(t.nbytes for t in inputs.values()) + result.nbytes
        for c in checkpoints.values():
            c.release(name, lo, hi)
    return moved


def _replace(tmp: Path, out: Path, overwrite: bool) -> None:
    if out.exists():
        if not overwrite:
            raise FileExistsError(f"out_dir: {out} appeared during the merge; refusing to replace it")
        trash = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        os.rename(out, trash)
        os.rename(tmp, out)
        if trash.is_dir():
            shutil.rmtree(trash, ignore_errors=True)
        else:
            trash.unlink()
    else:
        os.rename(tmp, out)
