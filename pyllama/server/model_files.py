"""Where router mode finds its models: llama-server's --models-dir layout, the sections of its
--models-preset INI file, and the Hugging Face cache. Each raises ValueError with the message a
user sees."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .hf_cache import cached_models, projector, resolve


def models_dir(folder: str) -> dict[str, dict[str, Any]]:
    """llama-server's --models-dir: FILE.gguf is the model FILE; a subfolder is one model named after
    it (its first shard ``*-00001-of-*``, or its one GGUF), with a ``*mmproj*`` file as its projector."""
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"--models-dir {folder} is not a folder")
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(root.iterdir()):
        if path.is_dir():
            files = sorted(p for p in path.glob("*.gguf") if "mmproj" not in p.name)
            shards = [p for p in files if "-00001-of-" in p.name]
            projectors = sorted(path.glob("*mmproj*.gguf"))
            if shards or files:
                found[path.name] = {"model": str((shards or files)[0])}
                if projectors:
                    found[path.name]["mmproj"] = str(projectors[0])
        elif path.suffix == ".gguf" and "mmproj" not in path.name:
            found[path.stem] = {"model": str(path)}
    return found


def preset_sections(path: str) -> dict[str, list[tuple[str, str]]]:
    """The INI file's ``key = value`` lines by section (``""``: keys before the first header,
    llama-server's ``version = 1``, which is left out)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read the preset file {path}: {exc}") from None
    sections: dict[str, list[tuple[str, str]]] = {}
    section = ""
    for number, raw in enumerate(text.splitlines(), 1):
        line = re.split(r"\s[;#]|^[;#]", raw.strip(), maxsplit=1)[0].strip()  # ; and # start comments
        if not line:
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
            sections.setdefault(section, [])
        elif "=" in line:
            key, value = (part.strip() for part in line.split("=", 1))
            if key != "version":
                sections.setdefault(section, []).append((key, value))
        else:
            raise ValueError(f"{path} line {number}: expected [name] or key = value, got {raw.strip()!r}")
    return sections


def cached_entries() -> dict[str, dict[str, Any]]:
    """The models in the Hugging Face cache (server/hf_cache.py), which llama-server's router lists
    as ``owner/repo:QUANT``, each with its projector when the repository has one."""
    found: dict[str, dict[str, Any]] = {}
    for model_id, path in cached_models().items():
        found[model_id] = {"model": str(path)}
        mmproj = projector(path)
        if mmproj is not None:
            found[model_id]["mmproj"] = str(mmproj)
    return found


def cached_repositories(repo: str | None, file: str | None, draft: str | None) -> dict[str, Any]:
    """A preset's ``hf-repo``/``hf-file``/``spec-draft-hf``: the cached files they name (a repository
    not in the cache stands for its own file: loading it fails, naming it)."""
    named: dict[str, Any] = {}
    for key, model_id, within in (("model", repo, file), ("model_draft", draft, None)):
        if model_id:
            try:
                path = resolve(model_id, within)
            except ValueError as exc:
                raise ValueError(f"{model_id}: {exc}") from None
            named[key] = str(path) if path is not None else model_id
    return named
