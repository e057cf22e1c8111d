"""Fetching a GGUF file from the Hugging Face Hub for Llama.from_pretrained."""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path


def _matching(repo_id: str, pattern: str, cache_dir, local_files_only: bool) -> str:
    import huggingface_hub

    if local_files_only:
        snapshot = Path(huggingface_hub.snapshot_download(repo_id, cache_dir=cache_dir, local_files_only=True))
        names = [p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file()]
    else:
        names = huggingface_hub.list_repo_files(repo_id)
    found = sorted(name for name in names if fnmatch.fnmatch(name, pattern) or fnmatch.fnmatch(Path(name).name, pattern))
    if len(found) != 1:
        listing = ", ".join(found) if found else "nothing"
        raise ValueError(f"{pattern!r} in {repo_id} matches {listing}; it must match exactly one file")
    return found[0]


def download(repo_id: str, filename: str, *, cache_dir: str | os.PathLike[str] | None = None,
             local_dir: str | os.PathLike[str] | None = None, local_files_only: bool = False) -> str:
    try:
        import huggingface_hub
    except ImportError as exc:
        raise ImportError("Llama.from_pretrained needs huggingface_hub: pip install 'pyllama-cffi[hf]'") from exc
    if any(ch in filename for ch in "*?["):
        filename = _matching(repo_id, filename, cache_dir, local_files_only)
    return huggingface_hub.hf_hub_download(repo_id, filename, cache_dir=cache_dir, local_dir=local_dir,
                                           local_files_only=local_files_only)
