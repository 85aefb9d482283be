"""instlib's weight files: safetensors with string metadata naming their format and a checksum of the tensors.

Every weight file this project writes (counting models, style tokens, token-training checkpoints) goes
through :func:`write_tensors` and is read back through :func:`read_tensors`, which refuses a file of
another format and one whose tensors no longer match the SHA-256 in its metadata (a modified or
truncated file), naming the file. Nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from instlib.data.atomic import atomic_path
from instlib.errors import DataError

FORMAT_KEY, CHECKSUM_KEY = "format", "sha256"


def tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the names, shapes and fp32 values of ``tensors`` (independent of their dtype and device)."""
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key].detach().to("cpu", torch.float32).contiguous()
        h.update(f"{key}:{tuple(t.shape)};".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def write_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str], fmt: str) -> Path:
    """Write ``tensors`` with ``metadata``, the format name ``fmt`` and their checksum, atomically."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    meta = {**metadata, FORMAT_KEY: fmt, CHECKSUM_KEY: tensor_digest(tensors)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return Path(path)


def read_tensors(path: str | Path, fmt: str, what: str, hint: str = "", *, tensors: bool = True
                 ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``(tensors, metadata)`` of a file written as format ``fmt``; ``what`` names it in errors ("token file").

    ``tensors=False`` reads the metadata only (and skips the checksum, which needs the tensors).
    ``hint`` says what to use instead when the file is of another kind.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no such {what}", path)
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            values = {k: fh.get_tensor(k) for k in fh.keys()} if tensors else {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise DataError(f"is not a readable safetensors file (truncated, or not a {what}?): {exc}", path) from exc
    if meta.get(FORMAT_KEY) != fmt:
        raise DataError(f"is a safetensors file but not an {fmt} file (format {meta.get(FORMAT_KEY)!r})"
                        + (f"; {hint}" if hint else ""), path)
    if tensors and meta.get(CHECKSUM_KEY) != tensor_digest(values):
        raise DataError("was modified after it was written: its tensors do not match the checksum in its metadata",
                        path)
    return values, meta
