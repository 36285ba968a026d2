"""Writes that are never half-done: write a temporary file beside the target, fsync it, rename it over.

A rename within one folder is atomic on POSIX, so a reader (or a `kill -9` at any moment) sees either the
old complete file or the new complete file, never a mix.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as serialize_tensors


def write_bytes_atomic(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, value: Any) -> None:
    write_bytes_atomic(path, (json.dumps(value, indent=2) + "\n").encode())


def write_tensors_atomic(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Save tensors as safetensors (no pickle), with optional string metadata in the same file."""
    plain = {name: t.detach().contiguous().cpu() for name, t in tensors.items()}
    write_bytes_atomic(path, serialize_tensors(plain, metadata=metadata))
