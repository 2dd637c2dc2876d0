"""Safetensors checkpoints on disk: memory-mapped reading for streaming merges, whole loads and saves.

Layout read and written is Hugging Face's: ``model.safetensors`` or shards listed by
``model.safetensors.index.json``. :class:`Checkpoint` maps the files and hands out zero-copy views
(the streaming merge reads through it); :func:`load_checkpoint` and :func:`save_checkpoint` load and
write whole state dicts with ``safetensors.torch``. The input digests a merge records are computed
here too (:func:`file_xxh64`, :func:`file_sha256`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Mapping

import torch

from pangu_core import _core
from pangu_core.tensors import SAFETENSORS_CODES, element_size, numel, safetensors_dtype

INDEX_NAME = "model.safetensors.index.json"
_PAGE = os.sysconf("SC_PAGE_SIZE")


def checkpoint_files(path: str | os.PathLike[str]) -> tuple[list[str], Path | None]:
    """The safetensors files of a checkpoint folder (its index's shards, else ``model.safetensors``,
    else every ``*.safetensors``) or of one file, and the folder (None for a file). A folder with
    ``model.safetensors`` may hold other safetensors files that are not weights (an SFT checkpoint's
    ``training_state.safetensors``): only the model file is read. Raises FileNotFoundError or ValueError naming
    the path."""
    p = Path(path)
    if p.is_dir():
        index = p / INDEX_NAME
        if index.is_file():
            try:
                with open(index, encoding="utf-8") as f:
                    files = sorted(set(json.load(f).get("weight_map", {}).values()))
            except (json.JSONDecodeError, AttributeError, UnicodeDecodeError) as exc:
                raise ValueError(f"{index}: not a safetensors index ({exc})") from None
            if not files:
                raise ValueError(f"{index}: no weight_map entries")
        elif (p / "model.safetensors").is_file():
            files = ["model.safetensors"]
        else:
            files = sorted(x.name for x in p.glob("*.safetensors"))
            if not files:
                raise FileNotFoundError(f"{p}: no *.safetensors file and no {INDEX_NAME}")
        paths = [str(p / f) for f in files]
        for file in paths:
            if not os.path.isfile(file):
                raise FileNotFoundError(f"{file}: listed in {INDEX_NAME} but missing")
        return paths, p
    if p.is_file():
        return [str(p)], None
    raise FileNotFoundError(f"{p}: no such checkpoint folder or file")


class Checkpoint:
    """A safetensors checkpoint (a folder, sharded or not, or one file), memory-mapped.

    ``entries`` maps tensor name -> (reader, dtype, shape, begin, end); tensors come out zero-copy.
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = str(path)
        self.files, self.folder = checkpoint_files(path)
        self.entries: dict[str, tuple[Any, torch.dtype, tuple[int, ...], int, int]] = {}
        self.readers = []
        for file in self.files:
            reader = _core.merge.SafetensorsReader(file)
            self.readers.append(reader)
            try:
                header = json.loads(reader.header())
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise ValueError(f"{file}: unreadable safetensors header ({exc})") from None
            for name, info in header.items():
                if name == "__metadata__":
                    continue
                try:
                    dtype = safetensors_dtype(info["dtype"])
                except ValueError as exc:
                    raise ValueError(f"{name} in {file}: {exc}") from None
                begin, end = (int(x) for x in info["data_offsets"])
                shape = tuple(int(s) for s in info["shape"])
                if end - begin != numel(shape) * element_size(dtype):
                    raise ValueError(f"{name} in {file}: {end - begin} bytes do not hold {info['dtype']} {list(shape)}")
                if name in self.entries:
                    raise ValueError(f"{name}: stored twice in {self.path}")
                self.entries[name] = (reader, dtype, shape, begin, end)

    def file_of(self, name: str) -> str:
        """The file holding tensor ``name``."""
        return self.entries[name][0].path

    def tensor(self, name: str) -> torch.Tensor:
        """Tensor ``name`` as a zero-copy view of the mapped file (writes go to private pages)."""
        reader, dtype, shape, begin, end = self.entries[name]
        raw = torch.from_numpy(reader.buffer(begin, end, name))
        return raw.view(dtype).reshape(shape)

    def prefetch(self, name: str) -> None:
        """Asks the kernel to read tensor ``name`` ahead (readahead; returns at once)."""
        reader, _, _, begin, end = self.entries[name]
        reader.prefetch(begin, end)

    def _span(self, name: str, lo: int | None, hi: int | None) -> tuple[Any, int, int, int]:
        reader, dtype, _, begin, end = self.entries[name]
        size = element_size(dtype)
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
        """Tensor name -> (shape, file holding it), for :func:`check_same_tensors`."""
        return {n: (e[2], e[0].path) for n, e in self.entries.items()}


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


def file_xxh64(path: str) -> str:
    """Hex XXH64 (seed 0, canonical big-endian form, as ``xxhsum -H1`` prints it) of a file, computed
    in C++ over a memory mapping without copying; drops the GIL."""
    return _core.merge.file_xxh64(str(path))


FILE_HASHES = {"xxh64": file_xxh64, "sha256": file_sha256}


def plan_shards(tensors: list[tuple[str, torch.dtype, tuple[int, ...]]], max_shard_bytes: int) -> list[list]:
    """Splits (name, dtype, shape) in order into shards of at most ``max_shard_bytes`` (a bigger
    tensor gets a shard of its own): a shard closes before the tensor that would push it past the
    limit. Each shard lists (name, dtype, shape, begin, end) with byte offsets in its data."""
    shards: list[list] = [[]]
    size = 0
    for name, dtype, shape in tensors:
        nbytes = numel(shape) * element_size(dtype)
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append((name, dtype, shape, size, size + nbytes))
        size += nbytes
    return shards


def shard_name(index: int, count: int) -> str:
    """Hugging Face's name of shard ``index`` (0-based) of ``count``."""
    return f"model-{index + 1:05d}-of-{count:05d}.safetensors"


def header_json(shard: list, metadata: dict[str, str]) -> str:
    """The safetensors header of a planned shard (see :func:`plan_shards`)."""
    header: dict[str, Any] = {"__metadata__": metadata}
    for name, dtype, shape, begin, end in shard:
        header[name] = {"dtype": SAFETENSORS_CODES[dtype], "shape": list(shape), "data_offsets": [begin, end]}
    return json.dumps(header, separators=(",", ":"))


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint folder (sharded or not) or safetensors file, loaded into memory.

    Raises FileNotFoundError for a missing path or shard, ValueError for a file that is not
    safetensors or a tensor stored in two shards.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    files, _ = checkpoint_files(path)
    state_dict: dict[str, torch.Tensor] = {}
    for file in files:
        try:
            tensors = load_file(file)
        except SafetensorError as exc:
            raise ValueError(f"{file}: not a readable safetensors file ({exc})") from None
        for name, tensor in tensors.items():
            if name in state_dict:
                raise ValueError(f"{name}: stored twice in {path}")
            state_dict[name] = tensor
    return state_dict


def save_checkpoint(state_dict: Mapping[str, torch.Tensor], out_dir: str | os.PathLike[str], *,
                    max_shard_bytes: int = 2 << 30, metadata: dict[str, str] | None = None) -> str:
    """Writes ``state_dict`` as sharded safetensors plus index into the new folder ``out_dir``; returns it.

    Shards hold at most ``max_shard_bytes`` (a bigger tensor gets its own); ``metadata`` goes into
    every shard's header (default ``{"format": "pt"}``). The folder appears only when complete.
    Raises FileExistsError when ``out_dir`` exists.
    """
    from safetensors.torch import save_file

    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict: expected a mapping of name -> tensor, got {type(state_dict).__name__}")
    out = Path(out_dir)
    if out.exists():
        raise FileExistsError(f"out_dir: {out} exists; choose a new folder")
    if isinstance(max_shard_bytes, bool) or not isinstance(max_shard_bytes, int) or max_shard_bytes < 1:
        raise ValueError(f"max_shard_bytes: expected an int >= 1, got {max_shard_bytes!r}")
    for name, tensor in state_dict.items():
        if not isinstance(tensor, torch.Tensor) or tensor.device.type != "cpu":
            raise TypeError(f"state_dict[{name!r}]: expected a CPU torch.Tensor, got {tensor!r:.60}")
    plan = plan_shards([(n, t.dtype, tuple(t.shape)) for n, t in state_dict.items()], max_shard_bytes)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        weight_map = {}
        for index, shard in enumerate(plan):
            file_name = shard_name(index, len(plan))
            tensors, storages = {}, set()
            for name, *_ in shard:
                tensor = state_dict[name].detach().contiguous()
                storage = tensor.untyped_storage().data_ptr()
                # safetensors refuses tensors sharing memory (tied weights): each is stored on its own
                tensors[name] = tensor.clone() if storage in storages and tensor.numel() else tensor
                storages.add(storage)
                weight_map[name] = file_name
            save_file(tensors, str(tmp / file_name), metadata=metadata or {"format": "pt"})
        total = sum(e - b for shard in plan for _, _, _, b, e in shard)
        with open(tmp / INDEX_NAME, "w", encoding="utf-8") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return str(out)
