"""The Hugging Face hub cache on disk, laid out the way llama.cpp and ``huggingface_hub`` both lay
it out, so a model either of them downloaded is seen here and the other way round::

    <root>/models--owner--repo/refs/main              the commit in use (40 hex, no newline)
    <root>/models--owner--repo/blobs/<oid>            file contents, named by LFS sha256 or git oid
    <root>/models--owner--repo/snapshots/<commit>/P   relative symlink to ../../blobs/<oid>

A model id is ``owner/repo[:QUANT]``; the quant tag picks one GGUF of the repo by llama.cpp's
rules (``find_best_model``), which this module shares with the downloader."""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

DEFAULT_TAGS = ("Q4_K_M", "Q8_0")  # llama.cpp's choice when an id names no quant
_SIDECARS = ("mtp-", "eagle3-", "dflash-", "dspark-")  # draft heads that ship next to a model
_NOT_MODEL = ("mmproj", "imatrix", *_SIDECARS)
_REPO_ID = re.compile(r"[A-Za-z0-9_]+(?:[/.-][A-Za-z0-9_]+)*")
_TAG = re.compile(r"[A-Za-z0-9_.-]+")
_COMMIT = re.compile(r"[0-9a-fA-F]{40}")
_SPLIT = re.compile(r"(.+)-(\d{5})-of-(\d{5})", re.IGNORECASE)
_FILE_TAG = re.compile(r"[-.]([A-Za-z0-9_]+)$")


def cache_root() -> Path:
    """The cache folder; read from the environment at each call so tests and users can move it."""
    env = os.environ
    candidates: list[tuple[str | None, tuple[str, ...]]]
    candidates = [(env.get(name), ()) for name in ("LLAMA_CACHE", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE")]
    candidates += [(env.get("HF_HOME"), ("hub",)), (env.get("XDG_CACHE_HOME"), ("huggingface", "hub"))]
    for base, tail in candidates:
        if base:
            return Path(base, *tail).expanduser().absolute()
    return Path.home() / ".cache" / "huggingface" / "hub"


def is_valid_repo_id(repo: str) -> bool:
    """llama.cpp's rule: ``[A-Za-z0-9_]`` runs joined by single ``/ . -``, exactly one ``/``."""
    return len(repo) <= 256 and repo.count("/") == 1 and _REPO_ID.fullmatch(repo) is not None


def split_model_id(model_id: str) -> tuple[str, str]:
    """``owner/repo:Q4_K_M`` -> ``("owner/repo", "Q4_K_M")``; no tag gives ``""``."""
    repo, colon, tag = model_id.partition(":")
    if not is_valid_repo_id(repo) or (colon and not _TAG.fullmatch(tag)):
        raise ValueError(f"invalid Hugging Face model id {model_id!r}: expected owner/repo[:quant]")
    return repo, tag


def repo_folder(repo: str, root: Path | None = None) -> Path:
    return (root or cache_root()) / ("models--" + repo.replace("/", "--"))


def is_commit(text: str) -> bool:
    return _COMMIT.fullmatch(text) is not None


def is_safe_subpath(path: str) -> bool:
    """A repo path that stays inside its snapshot (the server's listing is not trusted blindly)."""
    parts = PurePosixPath(path).parts
    return bool(parts) and not path.startswith("/") and ".." not in parts and "\\" not in path


@dataclass(frozen=True)
class SplitInfo:
    """What a GGUF file name says: ``model-Q4_K_M-00001-of-00003.gguf`` is part 1 of 3 of the
    prefix ``model-Q4_K_M`` with tag ``Q4_K_M``."""
    prefix: str
    tag: str
    index: int
    count: int


def split_info(path: str) -> SplitInfo | None:
    if not path.endswith(".gguf"):
        return None
    prefix, index, count = path[:-len(".gguf")], 1, 1
    match = _SPLIT.fullmatch(prefix)
    if match:
        prefix, index, count = match[1], int(match[2]), int(match[3])
    tag = _FILE_TAG.search(prefix)
    return SplitInfo(prefix, tag[1].upper() if tag else "", index, count)


def is_model_file(path: str) -> bool:
    """A GGUF that is a model itself, not a projector, imatrix or draft sidecar."""
    name = path.rsplit("/", 1)[-1]
    return name.endswith(".gguf") and not any(word in name for word in _NOT_MODEL)


def _is_first_part(path: str) -> bool:
    info = split_info(path)
    return info is not None and (info.count <= 1 or info.index == 1)


def find_best_model(paths: list[str], tag: str) -> str | None:
    """The repo file an id's tag names: the first model GGUF whose path holds ``TAG.`` or ``TAG-``
    (any case); with no tag, Q4_K_M, then Q8_0, then the first model GGUF. Always part 1 of a split."""
    candidates = [p for p in paths if is_model_file(p) and _is_first_part(p)]
    for wanted in (tag,) if tag else DEFAULT_TAGS:
        pattern = re.compile(re.escape(wanted) + "[.-]", re.IGNORECASE)
        for path in candidates:
            if pattern.search(path):
                return path
    return None if tag or not candidates else candidates[0]


def split_parts(paths: list[str], model: str) -> list[str]:
    """Every part of a split model (just ``model`` when it is not split)."""
    info = split_info(model)
    if info is None or info.count <= 1:
        return [model]
    return [p for p in paths if (s := split_info(p)) and (s.prefix, s.count) == (info.prefix, info.count)]


def _quant_bits(path: str) -> int:
    """Q4_K_M -> 4, F16 -> 16: how close a projector's precision is to the model's."""
    info = split_info(path)
    digits = re.search(r"\d+", info.tag if info else "")
    return int(digits[0]) if digits else 0


def find_projector(paths: list[str], model: str) -> str | None:
    """The mmproj GGUF for ``model``: in its folder or an ancestor (deepest wins), then closest bits."""
    model_dir = model.split("/")[:-1]
    bits, best, best_key = _quant_bits(model), None, (-1, 0)
    for path in paths:
        if not path.endswith(".gguf") or "mmproj" not in path:
            continue
        sib_dir = path.split("/")[:-1]
        if model_dir[:len(sib_dir)] != sib_dir:
            continue
        key = (len(sib_dir), -abs(_quant_bits(path) - bits))
        if key > best_key:
            best, best_key = path, key
    return best


def current_commit(folder: Path) -> str:
    """The snapshot in use: ``refs/main``, else the first ref holding a valid commit."""
    refs = folder / "refs"
    fallback = ""
    for ref in sorted(refs.iterdir()) if refs.is_dir() else ():
        try:
            commit = ref.read_text(encoding="utf-8").split("\n", 1)[0].strip()
        except OSError:  # a folder (refs/pr/…) or an unreadable file
            continue
        if is_commit(commit):
            if ref.name == "main":
                return commit
            fallback = fallback or commit
    return fallback


def write_ref(folder: Path, name: str, commit: str) -> None:
    """Point ``refs/<name>`` at ``commit``, atomically so a reader never sees half a hash."""
    ref = folder / "refs" / name
    ref.parent.mkdir(parents=True, exist_ok=True)
    tmp = ref.with_name(ref.name + ".tmp")
    tmp.write_text(commit, encoding="utf-8")
    os.replace(tmp, ref)


@dataclass(frozen=True)
class CachedFile:
    repo: str
    path: str  # inside the repo, "/"-separated
    local: Path  # the snapshot entry (a symlink to its blob, or the file itself)


def cached_files(repo: str | None = None, root: Path | None = None) -> list[CachedFile]:
    """Files of the current snapshot of every cached repo (or of ``repo``), sorted by repo and path."""
    root = root or cache_root()
    found: list[CachedFile] = []
    folders = [repo_folder(repo, root)] if repo else sorted(root.glob("models--*"))
    for folder in folders:
        name = folder.name[len("models--"):].replace("--", "/")
        commit = current_commit(folder) if is_valid_repo_id(name) else ""
        snapshot = folder / "snapshots" / commit
        if not commit or not snapshot.is_dir():
            continue
        for dirpath, _dirs, names in os.walk(snapshot):
            for entry in names:
                local = Path(dirpath, entry)
                found.append(CachedFile(name, local.relative_to(snapshot).as_posix(), local))
    return sorted(found, key=lambda f: (f.repo, f.path))


def cached_models(root: Path | None = None) -> dict[str, Path]:
    """``owner/repo:TAG`` -> the snapshot path of its GGUF (part 1), for every tagged model GGUF of
    every cached repo. A file with no tag suffix (``model.gguf``) is not listed, as in llama.cpp."""
    models: dict[str, Path] = {}
    for file in cached_files(root=root):
        info = split_info(file.path)
        if info is None or info.index != 1 or not info.tag:
            continue
        if any(word in info.prefix for word in ("mmproj", *_SIDECARS)):
            continue
        models.setdefault(f"{file.repo}:{info.tag}", file.local)
    return dict(sorted(models.items()))


def resolve(model_id: str, hf_file: str | None = None, root: Path | None = None) -> Path | None:
    """The cached snapshot path ``model_id`` (or its repo's ``hf_file``) names, without any network;
    None when it is not cached."""
    repo, tag = split_model_id(model_id)
    files = {f.path: f.local for f in cached_files(repo, root)}
    path = hf_file if hf_file else find_best_model(list(files), tag)
    return files.get(path) if path else None


def projector(model_path: Path) -> Path | None:
    """The cached mmproj that goes with a model file of a snapshot (or of a plain folder)."""
    base = next((a for a in model_path.parents if a.parent.name == "snapshots"), None)
    if base is None:  # a plain folder: only files next to the model can be its projector
        base = model_path.parent
        paths = [p.name for p in base.iterdir()]
    else:
        paths = [Path(d, n).relative_to(base).as_posix() for d, _, names in os.walk(base) for n in names]
    found = find_projector(paths, model_path.relative_to(base).as_posix())
    return base / found if found else None


def _blob_of(entry: Path) -> Path | None:
    """Where a snapshot symlink points, as a normalized path (None for a plain file)."""
    if not entry.is_symlink():
        return None
    return Path(os.path.normpath(entry.parent / os.readlink(entry)))


def remove(model_id: str, root: Path | None = None) -> bool:
    """Forget a cached model. With a tag: the current snapshot's GGUFs of that tag (every split
    part, and a projector with the same tag) and the blobs no remaining entry uses; refs and other
    tags stay. With no tag: the whole repo folder. Whether anything was removed."""
    repo, tag = split_model_id(model_id)
    if not tag:
        folder = repo_folder(repo, root)
        if not folder.is_dir():
            return False
        shutil.rmtree(folder)
        return True
    doomed = [f.local for f in cached_files(repo, root)
              if (info := split_info(f.path)) and info.tag == tag.upper()]
    blobs = {blob for entry in doomed if (blob := _blob_of(entry))}
    for entry in doomed:
        entry.unlink(missing_ok=True)
    still_used = {_blob_of(f.local) for f in cached_files(repo, root)}
    for blob in blobs - still_used:
        blob.unlink(missing_ok=True)
    return bool(doomed)
