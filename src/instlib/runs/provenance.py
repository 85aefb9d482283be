"""Provenance: what produced a run's numbers (profile, data, models, seeds, versions, commit)."""

from __future__ import annotations

import hashlib
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("instlib", "numpy", "pandas", "torch", "torchvision", "timm", "diffusers", "transformers",
            "accelerate", "papermill", "jupyter-book")


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Installed versions (``"-"`` for packages that are not installed)."""
    out = {"python": platform.python_version()}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            out[n] = "-"
    return out


def source_root() -> Path:
    """The folder holding the ``instlib`` package sources."""
    import instlib

    return Path(instlib.__file__).resolve().parent


def source_hash() -> str:
    """SHA-256 over the package's own files (code and data), so edits count even without a commit."""
    root = source_root()
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.suffix in {".py", ".yaml", ".yml", ".csv", ".json"} and "__pycache__" not in p.parts:
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def git_commit(path: Path | None = None) -> dict[str, Any]:
    """``{"commit": sha, "dirty": bool}`` of the checkout holding ``path`` (the sources), or ``{}``."""
    path = path or source_root()
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "."], cwd=path,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"commit": sha, "dirty": bool(dirty)}


def device_info() -> dict[str, Any]:
    info: dict[str, Any] = {"platform": platform.platform(), "machine": platform.machine()}
    try:
        import os

        info["cpus"] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover
        import os

        info["cpus"] = os.cpu_count()
    try:
        import torch

        info["cuda"] = torch.cuda.is_available()
        if info["cuda"]:
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:  # pragma: no cover
        pass
    return info


def collect(profile: Any = None, extra: dict | None = None) -> dict[str, Any]:
    """Everything above in one JSON-serialisable dict."""
    rec: dict[str, Any] = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": package_versions(),
        "git": git_commit(),
        "source_sha256": source_hash(),
        "device": device_info(),
        "argv": sys.argv,
    }
    if profile is not None:
        rec["profile"] = {"name": profile.name, **profile.parameters()}
    if extra:
        rec.update(extra)
    return rec
