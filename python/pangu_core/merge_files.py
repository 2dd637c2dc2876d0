"""Streaming merges of checkpoint folders: mmap safetensors in, sharded safetensors out, atomically.

Layout read and written is Hugging Face's: ``model.safetensors`` or shards listed by
``model.safetensors.index.json``. The merge streams: input tensors are zero-copy views of the
memory-mapped files, mapped a range at a time in one call (populate) and dropped from the process
once used; the C++ kernel writes into an output buffer, and a C++ writer thread writes that buffer to
its shard while the next piece is computed.

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

import hashlib
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
from pangu_core.merge import DTYPES, MergeConfig, check_same_tensors, merge_one

INDEX_NAME = "model.safetensors.index.json"
RECORD_NAME = "pangu_merge.json"
WRITE_DEPTH = 2
SLICE_ELEMENTS = 1 << 20  # per slice: small enough for the caches, large enough to amortise the calls

ST_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}
ST_NAMES = {v: k for k, v in ST_DTYPES.items()}
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack")


class Checkpoint:
    """A safetensors checkpoint (a folder, sharded or not, or one file), memory-mapped.

    ``entries`` maps tensor name -> (reader, dtype, shape, begin, end); tensors come out zero-copy.
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = str(path)
        p = Path(path)
        if p.is_dir():
            index = p / INDEX_NAME
            if index.is_file():
                with open(index, encoding="utf-8") as f:
                    files = sorted(set(json.load(f).get("weight_map", {}).values()))
                if not files:
                    raise ValueError(f"{index}: no weight_map entries")
            else:
                files = sorted(x.name for x in p.glob("*.safetensors"))
                if not files:
                    raise FileNotFoundError(f"{p}: no *.safetensors file and no {INDEX_NAME}")
            self.files = [str(p / f) for f in files]
            self.folder: Path | None = p
        elif p.is_file():
            self.files, self.folder = [str(p)], None
        else:
            raise FileNotFoundError(f"{p}: no such checkpoint folder or file")
        self.entries: dict[str, tuple[Any, torch.dtype, tuple[int, ...], int, int]] = {}
        self.readers = []
        for file in self.files:
            if not os.path.isfile(file):
                raise FileNotFoundError(f"{file}: listed in {INDEX_NAME} but missing")
            reader = _core.merge.SafetensorsReader(file)
            self.readers.append(reader)
            try:
                header = json.loads(reader.header())
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise ValueError(f"{file}: unreadable safetensors header ({exc})") from None
            for name, info in header.items():
                if name == "__metadata__":
                    continue
                if info["dtype"] not in ST_DTYPES:
                    raise ValueError(f"{name} in {file}: unsupported dtype {info['dtype']}")
                dtype = ST_DTYPES[info["dtype"]]
                begin, end = (int(x) for x in info["data_offsets"])
                shape = tuple(int(s) for s in info["shape"])
                if (end - begin) != _numel(shape) * torch.empty((), dtype=dtype).element_size():
                    raise ValueError(f"{name} in {file}: {end - begin} bytes do not hold {info['dtype']} {list(shape)}")
                if name in self.entries:
                    raise ValueError(f"{name}: stored twice in {self.path}")
                self.entries[name] = (reader, dtype, shape, begin, end)

    def file_of(self, name: str) -> str:
        return self.entries[name][0].path

    def tensor(self, name: str) -> torch.Tensor:
        """Tensor ``name`` as a zero-copy view of the mapped file (writes go to private pages)."""
        reader, dtype, shape, begin, end = self.entries[name]
        raw = torch.from_numpy(reader.buffer(begin, end, name))
        return raw.view(dtype).reshape(shape)

    def prefetch(self, name: str) -> None:
        reader, _, _, begin, end = self.entries[name]
        reader.prefetch(begin, end)

    def _span(self, name: str, lo: int | None, hi: int | None) -> tuple[Any, int, int, int]:
        reader, dtype, _, begin, end = self.entries[name]
        size = _element_size(dtype)
        return reader, begin, begin if lo is None else begin + lo * size, end if hi is None else begin + hi * size

    def populate(self, name: str, lo: int | None = None, hi: int | None = None) -> None:
        """Maps elements [lo, hi) of ``name`` (default: all) into this process in one call."""
        reader, _, first, last = self._span(name, lo, hi)
        reader.populate(first, last)

    def release(self, name: str, lo: int | None = None, hi: int | None = None) -> None:
        """Drops the pages of elements [lo, hi) of ``name`` (default: all) from this process, the page
        straddling ``lo`` included (the elements before it are done); views stay valid: they fault
        back in."""
        reader, begin, first, last = self._span(name, lo, hi)
        if first > begin:  # the page holding `first` starts at or after the tensor's first page
            absolute = reader.data_start + first
            first = max(begin, absolute - absolute % _PAGE - reader.data_start)
        reader.release(first, last)

    def shapes(self) -> dict[str, tuple[tuple[int, ...], str]]:
        return {n: (e[2], e[0].path) for n, e in self.entries.items()}


_PAGE = os.sysconf("SC_PAGE_SIZE")


def _element_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def file_sha256(path: str, chunk: int = 16 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks (hashlib drops the GIL on large updates)."""
    digest = hashlib.sha256()
    buffer = bytearray(chunk)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as f:
        while True:
            n = f.readinto(buffer)
            if not n:
                break
            digest.update(view[:n])
    return digest.hexdigest()


def plan_shards(tensors: list[tuple[str, torch.dtype, tuple[int, ...]]], max_shard_bytes: int) -> list[list]:
    """Greedy split in order: a shard closes before the tensor that would push it past the limit."""
    shards: list[list] = [[]]
    size = 0
    for name, dtype, shape in tensors:
        nbytes = _numel(shape) * torch.empty((), dtype=dtype).element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append((name, dtype, shape, size, size + nbytes))
        size += nbytes
    return shards


def _header(shard: list, metadata: dict[str, str]) -> str:
    header: dict[str, Any] = {"__metadata__": metadata}
    for name, dtype, shape, begin, end in shard:
        header[name] = {"dtype": ST_NAMES[dtype], "shape": list(shape), "data_offsets": [begin, end]}
    return json.dumps(header, separators=(",", ":"))


def _copy_side_files(base: Checkpoint, tmp: Path, dtype: str | None) -> None:
    """The base's config, tokenizer and other non-weight files, config.json's dtype updated."""
    if base.folder is None:
        return
    for item in base.folder.iterdir():
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


def file_xxh64(path: str) -> str:
    """Hex XXH64 (seed 0, canonical big-endian form, as ``xxhsum -H1`` prints it) of a file, computed
    in C++ over a memory mapping without copying; drops the GIL."""
    return _core.merge.file_xxh64(str(path))


FILE_HASHES = {"xxh64": file_xxh64, "sha256": file_sha256}


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
    hash_inputs: bool = True,
) -> str:
    """Merges the checkpoints named by ``config`` into ``out_dir``; returns its path.

    Refuses an existing ``out_dir`` unless ``overwrite``. Checks every input for the same tensor
    names and shapes first and reports all mismatches at once. ``threads`` sets the kernel threads
    for this call (their helpers sleep between calls, leaving the cores to the writer and hasher
    threads). ``durable`` fsyncs the shards before the rename (survives a power loss, not only a
    killed process). ``hash_inputs`` records each input file's digest (``config.input_hash``:
    XXH64 by default, or SHA-256) in the output's metadata as ``input_<algorithm>``; False records
    none whatever the config says.
    Raises ValueError naming a tensor whose merge holds NaN or infinity; nothing is left at out_dir.
    """
    if not isinstance(config, MergeConfig):
        raise TypeError(f"config: expected a MergeConfig, got {type(config).__name__}")
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise FileExistsError(f"out_dir: {out} exists; pass overwrite=True (--overwrite) to replace it")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads: expected an int >= 1, got {threads!r}")
    sources = config.sources()
    checkpoints = {s: Checkpoint(s) for s in sources}
    check_same_tensors({s: c.shapes() for s, c in checkpoints.items()})
    reference = checkpoints[sources[0]]
    names = list(reference.entries)
    out_dtype = DTYPES[config.dtype] if config.dtype else None

    def dtype_of(name: str) -> torch.dtype:
        dtype = reference.entries[name][1]
        return out_dtype if out_dtype is not None and dtype.is_floating_point and config.copy_source(name) is None else dtype

    plan = plan_shards([(n, dtype_of(n), reference.entries[n][2]) for n in names], config.max_shard_bytes)
    record = {"method": config.method, "config": config.to_dict(), "pangu_core": pangu_core.__version__}
    metadata = {"format": "pt", "pangu_merge": json.dumps(record, sort_keys=True)}
    files = [f for c in checkpoints.values() for f in c.files]
    algorithm = config.input_hash if hash_inputs else "none"
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
        weight_map = _stream(config, checkpoints, names, plan, metadata, tmp, progress, durable)
        _copy_side_files(reference if config.base_model else checkpoints[sources[0]], tmp, config.dtype)
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

    def take(self, numel: int, dtype: torch.dtype) -> torch.Tensor:
        if not self.buffers:  # first use: fault the pages in once, then reuse them for every slice
            self.buffers = [torch.empty(SLICE_ELEMENTS * 4, dtype=torch.uint8) for _ in range(WRITE_DEPTH + 1)]
        buffer = self.buffers[self.turn]
        self.turn = (self.turn + 1) % len(self.buffers)
        return buffer[: numel * _element_size(dtype)].view(dtype)


def _stream(config: MergeConfig, checkpoints: dict[str, Checkpoint], names: list[str], plan: list[list],
            metadata: dict[str, str], tmp: Path, progress: bool, durable: bool) -> dict[str, str]:
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
            file_name = f"model-{index + 1:05d}-of-{len(plan):05d}.safetensors"
            writer = _core.merge.SafetensorsWriter(str(tmp / file_name), _header(shard, metadata), WRITE_DEPTH)
            try:
                for name, dtype, shape, begin, _ in shard:
                    if position + 1 < len(order):  # readahead when the page cache is cold
                        for c in checkpoints.values():
                            c.prefetch(order[position + 1][0])
                    numel = _numel(shape)
                    if sliced and numel > 0:
                        moved += _merge_slices(config, checkpoints, name, dtype, numel, begin, writer, ring)
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
                  numel: int, begin: int, writer: Any, ring: _OutputRing) -> int:
    """Merges tensor ``name`` in flat slices into ring buffers, each written at its offset; returns
    the bytes read and written."""
    flat = {s: c.tensor(name).reshape(-1) for s, c in checkpoints.items()}
    size = _element_size(dtype)
    moved = 0
    for lo in range(0, numel, SLICE_ELEMENTS):
        hi = min(numel, lo + SLICE_ELEMENTS)
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


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint folder or file, copied out of the mapping."""
    c = Checkpoint(path)
    return {name: c.tensor(name).clone() for name in c.entries}


def save_checkpoint(state_dict: dict[str, torch.Tensor], out_dir: str | os.PathLike[str],
                    max_shard_bytes: int = 2 << 30, metadata: dict[str, str] | None = None) -> str:
    """Writes ``state_dict`` as sharded safetensors plus index into a new folder ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=False)
    items = [(n, t.dtype, tuple(t.shape)) for n, t in state_dict.items()]
    plan = plan_shards(items, max_shard_bytes)
    weight_map = {}
    for index, shard in enumerate(plan):
        file_name = f"model-{index + 1:05d}-of-{len(plan):05d}.safetensors"
        writer = _core.merge.SafetensorsWriter(str(out / file_name), _header(shard, metadata or {"format": "pt"}),
                                               WRITE_DEPTH)
        for name, _, _, begin, _ in shard:
            writer.submit(state_dict[name].detach().contiguous(), begin)
            weight_map[name] = file_name
        writer.close(False)
    total = sum(e - b for shard in plan for _, _, _, b, e in shard)
    with open(out / INDEX_NAME, "w", encoding="utf-8") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    return str(out)
