"""The Hugging Face cache and downloader against a fake hub on loopback (tests/fake_hub.py): which
files a quant tag picks, the on-disk layout llama.cpp and huggingface_hub share, resuming,
cancelling, errors."""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path

import pytest
from fake_hub import FakeHub, commit_of

from pyllama.errors import DownloadError
from pyllama.server import hf_download
from pyllama.server.hf_cache import cache_root, cached_models, projector, remove, resolve, split_model_id
from pyllama.server.hf_download import download

REPO = "acme/tiny-GGUF"
QUANTS = {  # tree order matters: the first match wins, and a tag's mmproj/imatrix must be skipped
    "README.md": b"# tiny\n",
    "mmproj-tiny-Q8_0.gguf": b"projector q8" * 10,
    "imatrix-Q8_0.gguf": b"imatrix" * 5,
    "tiny-Q4_K_M.gguf": b"model q4" * 40,
    "tiny-Q8_0.gguf": b"model q8" * 60,
    "tiny-F16.gguf": b"model f16" * 80,
    "mmproj-tiny-F16.gguf": b"projector f16" * 10,
}
SPLIT_REPO = "acme/big-GGUF"
SPLIT = {
    "Q4_K_M/big-Q4_K_M-00002-of-00003.gguf": b"part two" * 30,
    "Q4_K_M/big-Q4_K_M-00001-of-00003.gguf": b"part one" * 30,
    "Q4_K_M/big-Q4_K_M-00003-of-00003.gguf": b"part three" * 30,
    "Q8_0/big-Q8_0.gguf": b"big q8" * 30,
    "mmproj-big-F32.gguf": b"root projector",  # an ancestor of the model's folder: a candidate
    "Q4_K_M/mmproj-big-F16.gguf": b"near projector",  # the model's own folder: deeper, so it wins
    "Q8_0/mmproj-big-Q4_0.gguf": b"other folder",  # not on the model's path: never chosen
}
TOKEN = "hf_" + "a" * 34


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def hub(tmp_path, monkeypatch):
    for name in ("HF_ENDPOINT", "HF_TOKEN", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME"):
        monkeypatch.delenv(name, raising=False)
    with FakeHub({REPO: dict(QUANTS), SPLIT_REPO: dict(SPLIT)}) as served:
        for repo in served.repos:  # main is not the first branch listed: the downloader picks it by name
            served.branches[repo] = {"dev": "b" * 40, "main": commit_of(repo)}
        monkeypatch.setenv("MODEL_ENDPOINT", served.url)
        monkeypatch.setenv("LLAMA_CACHE", str(tmp_path / "cache"))
        yield served


def snapshot(repo: str) -> Path:
    return cache_root() / ("models--" + repo.replace("/", "--")) / "snapshots" / commit_of(repo)


def test_cache_root_follows_the_environment_in_llama_cpp_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    values = {"LLAMA_CACHE": "tmp", "HF_HUB_CACHE": "/hub-cache", "HUGGINGFACE_HUB_CACHE": "/old-cache",
              "HF_HOME": "/hf-home", "XDG_CACHE_HOME": "/xdg"}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    expected = [tmp_path / "tmp", Path("/hub-cache"), Path("/old-cache"), Path("/hf-home/hub"),
                Path("/xdg/huggingface/hub"), tmp_path / "home/.cache/huggingface/hub"]
    for name, want in zip([*values, None], expected):
        assert cache_root() == want
        if name:
            monkeypatch.setenv(name, "")  # set but empty counts as unset
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_root() == tmp_path / "home/.cache/huggingface/hub"


@pytest.mark.parametrize("model_id, expected", [
    ("owner/repo:Q4_K_M", ("owner/repo", "Q4_K_M")), ("owner/repo", ("owner/repo", "")),
    ("ggml-org/test-model-stories260K:F32", ("ggml-org/test-model-stories260K", "F32")),
    ("unsloth/Qwen3.5-0.8B-GGUF:UD-Q4_K_XL", ("unsloth/Qwen3.5-0.8B-GGUF", "UD-Q4_K_XL")),
])
def test_split_model_id(model_id, expected):
    assert split_model_id(model_id) == expected


@pytest.mark.parametrize("model_id", ["repo", "a/b/c", "owner/repo:", "owner/repo:Q4:Q8", "/repo", "owner//repo",
                                      "owner/-repo", "owner/re po", "owner/repo.", "", "owner/" + "x" * 260])
def test_split_model_id_rejects_malformed_ids(model_id):
    with pytest.raises(ValueError, match=r"invalid Hugging Face model id .*expected owner/repo\[:quant\]"):
        split_model_id(model_id)


def test_download_picks_the_tagged_quant_and_its_closest_projector(hub):
    calls: list[tuple[str, int, int]] = []
    path = download(f"{REPO}:q8_0", progress=lambda url, done, total: calls.append((url, done, total)))
    assert path == snapshot(REPO) / "tiny-Q8_0.gguf"
    assert path.read_bytes() == QUANTS["tiny-Q8_0.gguf"]
    assert sorted(p.name for p in snapshot(REPO).iterdir()) == ["mmproj-tiny-Q8_0.gguf", "tiny-Q8_0.gguf"]
    for name in ("tiny-Q8_0.gguf", "mmproj-tiny-Q8_0.gguf"):
        url = f"{hub.url}{REPO}/resolve/{commit_of(REPO)}/{name}"
        mine = [(done, total) for u, done, total in calls if u == url]
        size = len(QUANTS[name])
        assert mine[0] == (0, size) and mine[-1] == (size, size)
        assert all(total == size for _, total in mine)
    assert projector(path) == snapshot(REPO) / "mmproj-tiny-Q8_0.gguf"


def test_download_without_a_tag_prefers_q4_k_m(hub):
    assert download(REPO).name == "tiny-Q4_K_M.gguf"


def test_download_writes_the_hub_layout_that_the_cache_then_reads(hub):
    path = download(f"{REPO}:Q8_0")
    folder = cache_root() / "models--acme--tiny-GGUF"
    assert (folder / "refs" / "main").read_text() == commit_of(REPO)  # main, not the first branch
    blob = folder / "blobs" / sha256(QUANTS["tiny-Q8_0.gguf"])
    assert blob.read_bytes() == QUANTS["tiny-Q8_0.gguf"]
    assert path.is_symlink() and os.readlink(path) == f"../../blobs/{blob.name}"
    assert not list(folder.rglob("*.downloadInProgress"))
    assert cached_models() == {f"{REPO}:Q8_0": path}  # the projector is not a model
    assert resolve(f"{REPO}:Q8_0") == resolve(REPO) == path  # no Q4_K_M cached: Q8_0 is next
    assert resolve(REPO, hf_file="mmproj-tiny-Q8_0.gguf") == snapshot(REPO) / "mmproj-tiny-Q8_0.gguf"
    assert resolve(f"{REPO}:F16") is None and resolve("acme/other") is None
    (snapshot(REPO) / "model.gguf").write_bytes(b"no tag")  # llama.cpp lists no untagged file
    assert list(cached_models()) == [f"{REPO}:Q8_0"]


def test_split_model_downloads_every_part_and_the_nearest_projector(hub):
    path = download(f"{SPLIT_REPO}:Q4_K_M")
    assert path == snapshot(SPLIT_REPO) / "Q4_K_M/big-Q4_K_M-00001-of-00003.gguf"
    for name in [n for n in SPLIT if n.startswith("Q4_K_M/")]:
        assert (snapshot(SPLIT_REPO) / name).read_bytes() == SPLIT[name]
        assert os.readlink(snapshot(SPLIT_REPO) / name).startswith("../../../blobs/")
    assert not (snapshot(SPLIT_REPO) / "Q8_0").exists() and not (snapshot(SPLIT_REPO) / "mmproj-big-F32.gguf").exists()
    assert cached_models() == {f"{SPLIT_REPO}:Q4_K_M": path}
    assert projector(path) == snapshot(SPLIT_REPO) / "Q4_K_M/mmproj-big-F16.gguf"


def test_a_second_download_fetches_nothing(hub):
    first = download(f"{REPO}:Q8_0")
    assert len(hub.resolves()) == 2
    hub.requests.clear()
    assert download(f"{REPO}:Q8_0") == first
    assert hub.resolves() == []


def test_a_broken_transfer_resumes_with_a_range_request(hub, monkeypatch):
    monkeypatch.setattr(hf_download, "RETRY_DELAYS", (0.0, 0.0))
    hub.cut_next(REPO, "tiny-Q8_0.gguf", 100)
    path = download(f"{REPO}:Q8_0")
    assert path.read_bytes() == QUANTS["tiny-Q8_0.gguf"]
    ranges = [r.headers.get("Range") for r in hub.resolves() if r.path.endswith("/tiny-Q8_0.gguf")]
    assert ranges == [None, "bytes=100-"]


def test_cancel_mid_file_removes_the_partial_file(hub, monkeypatch):
    monkeypatch.setattr(hf_download, "CHUNK_BYTES", 16)
    polls = iter(range(1000))
    with pytest.raises(DownloadError, match="download cancelled"):
        download(f"{REPO}:Q8_0", cancelled=lambda: next(polls) >= 3)
    folder = cache_root() / "models--acme--tiny-GGUF"
    assert not list(folder.rglob("*.downloadInProgress")) and not list(folder.glob("blobs/*"))
    assert resolve(f"{REPO}:Q8_0") is None


def test_errors_name_the_url_and_what_is_missing(hub, unused_port):
    with pytest.raises(DownloadError, match=r"api/models/acme/nothing/refs answered HTTP 404 \(Repository not found"):
        download("acme/nothing:Q8_0")
    with pytest.raises(DownloadError) as missing:
        download(f"{REPO}:Q5_K_S")
    assert str(missing.value).startswith(f"no GGUF file for quant Q5_K_S in repo {REPO}: found mmproj-tiny-Q8_0.gguf")
    assert "tiny-F16.gguf" in str(missing.value)
    with pytest.raises(DownloadError, match=f"could not reach http://127.0.0.1:{unused_port}/api/models/"):
        download(f"{REPO}:Q8_0", endpoint=f"http://127.0.0.1:{unused_port}")


def test_a_valid_token_is_sent_as_bearer(hub, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    download(f"{REPO}:Q8_0")
    assert {r.headers.get("Authorization") for r in hub.requests} == {f"Bearer {TOKEN}"}
    hub.requests.clear()
    download(f"{REPO}:Q8_0", token="not-a-token")
    assert {r.headers.get("Authorization") for r in hub.requests} == {None}


def test_without_symlinks_the_file_moves_into_the_snapshot(hub, monkeypatch):
    def no_symlinks(*args: object) -> None:
        raise OSError("symlinks are not allowed here")

    monkeypatch.setattr(os, "symlink", no_symlinks)
    path = download(f"{REPO}:Q8_0")
    assert not path.is_symlink() and path.read_bytes() == QUANTS["tiny-Q8_0.gguf"]
    assert cached_models() == {f"{REPO}:Q8_0": path}


def test_remove_by_tag_keeps_other_tags_and_the_blobs_they_use(hub):
    hub.repos[REPO]["copy-Q4_K_M.gguf"] = QUANTS["tiny-Q8_0.gguf"]  # same bytes, so the same blob
    del hub.repos[REPO]["tiny-Q4_K_M.gguf"]
    q8, q4 = download(f"{REPO}:Q8_0"), download(f"{REPO}:Q4_K_M")
    assert os.readlink(q8) == os.readlink(q4)
    f16 = download(f"{REPO}:F16")
    f16_blob = f16.resolve()
    assert remove(f"{REPO}:f16")
    assert not f16.is_symlink() and not f16_blob.exists()
    assert not (snapshot(REPO) / "mmproj-tiny-F16.gguf").exists()  # same tag suffix: removed too
    assert remove(f"{REPO}:Q8_0")
    assert q4.read_bytes() == QUANTS["tiny-Q8_0.gguf"]  # its shared blob survived
    assert (snapshot(REPO) / "mmproj-tiny-Q8_0.gguf").exists() is False
    assert cached_models() == {f"{REPO}:Q4_K_M": q4}
    assert not remove(f"{REPO}:Q8_0")
    assert remove(REPO) and not (cache_root() / "models--acme--tiny-GGUF").exists()
    assert not remove(REPO) and cached_models() == {}


def test_huggingface_hub_sees_what_was_downloaded(hub):
    huggingface_hub = pytest.importorskip("huggingface_hub")
    path = download(f"{REPO}:Q8_0")
    assert huggingface_hub.try_to_load_from_cache(REPO, "tiny-Q8_0.gguf", cache_dir=cache_root()) == str(path)
    info = huggingface_hub.scan_cache_dir(cache_root())
    assert not info.warnings
    (repo,) = info.repos
    assert repo.repo_id == REPO and repo.size_on_disk == len(QUANTS["tiny-Q8_0.gguf"]) + len(
        QUANTS["mmproj-tiny-Q8_0.gguf"])


@pytest.fixture
def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
