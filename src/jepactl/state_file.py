"""A nested state (dicts, lists, tuples, tensors, numpy arrays, numbers) as one safetensors file.

``pack`` splits a state into the tensors of the safetensors payload and a JSON skeleton of
everything else, ``unpack`` puts it back together, and ``write_safetensors`` writes the format
itself so a failed write keeps its errno. checkpoint.py builds run checkpoints on it; nothing
here knows about runs, steps or files on disk.
"""

from __future__ import annotations

import json
import struct
import sys
from typing import Any

import numpy as np
import torch

# --------------------------------------------------------------------------------------------
# pack / unpack: any nested state <-> (tensors, JSON skeleton)
# --------------------------------------------------------------------------------------------
#
# Skeleton nodes: JSON scalars and lists stand for themselves; every JSON object is a tagged
# node, so no user value can be mistaken for one: {"tensor": name}, {"ndarray": name, "dtype",
# "shape"[, "scalar"]}, {"tuple": [...]}, {"dict": {str: node}} and {"items": [[key, value]]}
# for dicts with other keys (the optimizer's int parameter ids).


def pack(obj: Any) -> tuple[dict[str, torch.Tensor], Any]:
    """Return (tensors for the safetensors payload, JSON-able skeleton) of a nested state."""
    tensors: dict[str, torch.Tensor] = {}
    storages: set[tuple[str, int]] = set()

    def name_for(path: str) -> str:
        name, n = path or "_", 1
        while name in tensors:  # "a/b" as one key and as two levels would collide
            name, n = f"{path}#{n}", n + 1
        return name

    def add_tensor(path: str, tensor: torch.Tensor) -> str:
        tensor = tensor.detach()
        if tensor.layout != torch.strided:
            raise TypeError(f"cannot checkpoint the sparse tensor at '{path}'")
        storage = (str(tensor.device), tensor.untyped_storage().data_ptr())
        if not tensor.is_contiguous():
            tensor = tensor.contiguous()
        elif tensor.numel() and storage in storages:
            # safetensors refuses tensors that share memory (tied weights, views); each gets
            # its own copy, which loads back as an independent tensor of the same values.
            tensor = tensor.clone()
        storages.add(storage)
        name = name_for(path)
        tensors[name] = tensor
        return name

    def encode(value: Any, path: str) -> Any:
        if isinstance(value, torch.Tensor):
            return {"tensor": add_tensor(path, value)}
        if isinstance(value, (np.ndarray, np.generic)):
            array = np.asarray(value)
            if array.dtype.hasobject:
                raise TypeError(f"cannot checkpoint the object array at '{path}'")
            raw = torch.from_numpy(
                np.frombuffer(np.ascontiguousarray(array).tobytes(), dtype=np.uint8).copy()
            )
            node = {
                "ndarray": add_tensor(path, raw),
                "dtype": array.dtype.str,
                "shape": list(array.shape),
            }
            if isinstance(value, np.generic):
                node["scalar"] = True
            return node
        if value is None or isinstance(value, (bool, int, float, str)):  # after np.float64
            return value
        if isinstance(value, tuple):
            return {"tuple": [encode(v, _join(path, i)) for i, v in enumerate(value)]}
        if isinstance(value, list):
            return [encode(v, _join(path, i)) for i, v in enumerate(value)]
        if isinstance(value, dict):
            if all(isinstance(k, str) for k in value):
                return {"dict": {k: encode(v, _join(path, k)) for k, v in value.items()}}
            return {
                "items": [
                    [encode(k, _join(path, "key")), encode(v, _join(path, k))]
                    for k, v in value.items()
                ]
            }
        raise TypeError(f"cannot checkpoint {type(value).__name__} at '{path or '/'}'")

    return tensors, encode(obj, "")


def _join(path: str, key: Any) -> str:
    return f"{path}/{key}" if path else str(key)


def unpack(tensors: dict[str, torch.Tensor], skeleton: Any) -> Any:
    """Return the state ``pack`` flattened, with tuples, int keys and numpy arrays restored."""

    def decode(node: Any) -> Any:
        if isinstance(node, list):
            return [decode(v) for v in node]
        if not isinstance(node, dict):
            return node
        if "tensor" in node:
            return tensors[node["tensor"]]
        if "ndarray" in node:
            raw = tensors[node["ndarray"]].numpy()
            array = np.frombuffer(raw.tobytes(), dtype=np.dtype(node["dtype"]))
            array = array.reshape(node["shape"]).copy()  # writable, owns its memory
            return array[()] if node.get("scalar") else array
        if "tuple" in node:
            return tuple(decode(v) for v in node["tuple"])
        if "dict" in node:
            return {k: decode(v) for k, v in node["dict"].items()}
        if "items" in node:
            return {decode(k): decode(v) for k, v in node["items"]}
        raise ValueError(f"unknown checkpoint skeleton node {sorted(node)}")

    return decode(skeleton)


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------

_SAFETENSORS_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


def write_safetensors(handle, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write the safetensors format (read back by the safetensors library) to ``handle``.

    Written here rather than by ``safetensors.torch.save_file`` so that a failed write is an
    OSError with its errno (the disk-full message depends on it) and device tensors are copied
    to host memory one at a time. Larger elements first keep every tensor aligned.
    """
    if sys.byteorder != "little":
        raise RuntimeError("checkpoints are written on little-endian machines only")
    order = sorted(tensors, key=lambda name: (-tensors[name].element_size(), name))
    header: dict[str, Any] = {"__metadata__": metadata}
    offset = 0
    for name in order:
        tensor = tensors[name]
        if tensor.dtype not in _SAFETENSORS_DTYPES:
            raise TypeError(f"cannot checkpoint the {tensor.dtype} tensor '{name}'")
        size = tensor.numel() * tensor.element_size()
        header[name] = {
            "dtype": _SAFETENSORS_DTYPES[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # the format pads the header to 8 bytes with spaces
    handle.write(struct.pack("<Q", len(blob)))
    handle.write(blob)
    for name in order:
        host = tensors[name].to("cpu").contiguous().reshape(-1)
        handle.write(memoryview(host.view(torch.uint8).numpy()))
