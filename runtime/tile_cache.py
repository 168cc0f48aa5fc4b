"""Packed weights kept on disk, so that a model loads the second time without repacking.

The integer kernels read weights as 16-row tiles (cpu_kernels/tiles.py), which a GGUF file does not hold:
packing them costs a pass over every weight and fresh memory for all of them. The first load of a file
writes its tiles next to the models (`~/.cache/nibble/tiles`, or under $NIBBLE_CACHE); later loads map
that file instead, as llama.cpp maps its GGUF: nothing is packed and the pages come from the page cache.

A cache file is named by the model's path, size and modification time and by the kernels' version (the
hash in cpu_kernels.KERNEL_CACHE_DIR), so an edited model or a new nibble never reads stale tiles; it is
written to a temporary file and renamed when complete, and each new one deletes those whose model is gone
or changed. It takes about the model file's size on disk. NIBBLE_TILE_CACHE=0 turns the cache off.
"""
import hashlib
import json
import mmap
import os
from pathlib import Path

import numpy as np

import cpu_kernels

from .registry import cache_dir

MAGIC = b"NIBBLETILES1\n"
ALIGN = 4096


def enabled():
    return os.environ.get("NIBBLE_TILE_CACHE", "1") not in ("0", "", "no", "off")


def _source(model_path):
    """What a cache file was made from: the model file's path, size and time, and the kernels' version."""
    model_path = Path(model_path).resolve()
    stat = model_path.stat()
    return [str(model_path), stat.st_size, stat.st_mtime_ns, cpu_kernels.KERNEL_CACHE_DIR.name]


def cache_path(model_path) -> Path:
    source = _source(model_path)
    digest = hashlib.sha256("|".join(map(str, source)).encode()).hexdigest()[:16]
    return cache_dir() / "tiles" / f"{Path(source[0]).stem}-{digest}.tiles"


def _read_header(f):
    if f.read(len(MAGIC)) != MAGIC:
        raise ValueError("not a tile cache file")
    header_size = int.from_bytes(f.read(8), "little")
    return header_size, json.loads(f.read(header_size))


def prune(directory):
    """Delete cache files whose model is gone or changed, or that older kernels wrote."""
    for path in Path(directory).glob("*.tiles"):
        try:
            with open(path, "rb") as f:
                source = _read_header(f)[1]["source"]
            stale = not Path(source[0]).exists() or _source(source[0]) != source
        except (OSError, ValueError, KeyError, TypeError):
            stale = True
        if stale:
            path.unlink(missing_ok=True)


def _data_start(header_size):
    return -(-(len(MAGIC) + 8 + header_size) // ALIGN) * ALIGN


def load(model_path):
    """name -> tile array (views of a private map of the cache file), or None when there is no cache file."""
    if not enabled():
        return None
    path = cache_path(model_path)
    try:
        with open(path, "rb") as f:
            header_size, header = _read_header(f)
            index = header["tensors"]
            # a private writable map: the kernels take the same (writable) array type as freshly packed tiles
            mapped = mmap.mmap(f.fileno(), 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    except (OSError, ValueError, KeyError):
        return None
    buffer = np.frombuffer(mapped, np.uint8)[_data_start(header_size):]
    tiles = {}
    for name, (offset, shape) in index.items():
        size = int(np.prod(shape))
        if offset + size > buffer.size:
            return None                      # a truncated file: pack again
        tiles[name] = buffer[offset:offset + size].reshape(shape)
    return tiles


def save(model_path, tiles):
    """Write name -> tile array to the model's cache file (temporary file, then rename). Failing to write
    (a full or read-only disk) only costs the next load its repacking."""
    if not enabled() or not tiles:
        return
    path = cache_path(model_path)
    index, offset = {}, 0                     # offsets from the first page after the header
    for name, array in tiles.items():
        index[name] = (offset, list(array.shape))
        offset += -(-array.nbytes // ALIGN) * ALIGN
    header = json.dumps({"source": _source(model_path), "tensors": index}).encode()
    start = _data_start(len(header))
    temporary = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        prune(path.parent)
        with open(temporary, "wb") as f:
            f.write(MAGIC + len(header).to_bytes(8, "little") + header)
            for name, array in tiles.items():
                f.seek(start + index[name][0])
                f.write(memoryview(np.ascontiguousarray(array)).cast("B"))
        os.replace(temporary, path)
    except OSError:
        temporary.unlink(missing_ok=True)
