"""wheels/: the PEP 503 index per backend, and the metadata stamped into prebuilt wheels."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys

from conftest import REPO


def test_index_per_backend(tmp_path):
    wheels, out = tmp_path / "dist", tmp_path / "index"
    for backend, name in (("cpu", "pyllama_cffi-0.1.0-cp39-abi3-linux_x86_64.whl"),
                          ("cu13", "pyllama_cffi-0.1.0-cp39-abi3-manylinux_2_28_x86_64.whl")):
        (wheels / backend).mkdir(parents=True)
        (wheels / backend / name).write_bytes(f"{backend} wheel".encode())
    result = subprocess.run([sys.executable, str(REPO / "wheels" / "index.py"), str(wheels), str(out)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    page = (out / "cu13" / "simple" / "pyllama-cffi" / "index.html").read_text()
    href, digest = re.search(r'href="([^"#]+)#sha256=([0-9a-f]{64})"', page).groups()
    assert digest == hashlib.sha256(b"cu13 wheel").hexdigest()
    assert (out / "cu13" / "simple" / "pyllama-cffi" / href).exists()
    assert 'href="pyllama-cffi/"' in (out / "cpu" / "simple" / "index.html").read_text()
    assert not (out / "metal").exists()
    empty = subprocess.run([sys.executable, str(REPO / "wheels" / "index.py"), str(tmp_path / "none"), str(out)],
                           capture_output=True, text=True)
    assert empty.returncode == 1


def _wheel_with_metadata(path):
    import zipfile

    metadata = "Metadata-Version: 2.1\nName: pyllama-cffi\nVersion: 0.1.0\nRequires-Dist: cffi>=1.17\n\n# pyllama\nbody\n"
    files = {"pyllama/__init__.py": "", "pyllama_cffi-0.1.0.dist-info/METADATA": metadata,
             "pyllama_cffi-0.1.0.dist-info/WHEEL": "Wheel-Version: 1.0\n"}
    record = "".join(f"{name},,\n" for name in files) + "pyllama_cffi-0.1.0.dist-info/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as wheel:
        for name, text in {**files, "pyllama_cffi-0.1.0.dist-info/RECORD": record}.items():
            wheel.writestr(name, text)


def test_cuda_wheel_is_stamped_with_commit_and_runtime_wheels(tmp_path):
    import base64
    import json
    import zipfile

    wheel = tmp_path / "pyllama_cffi-0.1.0-cp39-abi3-linux_x86_64.whl"
    _wheel_with_metadata(wheel)
    result = subprocess.run([sys.executable, str(REPO / "wheels" / "metadata.py"), str(wheel), "--cuda", "13.0"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr

    with zipfile.ZipFile(wheel) as stamped:
        metadata = stamped.read("pyllama_cffi-0.1.0.dist-info/METADATA")
        record = stamped.read("pyllama_cffi-0.1.0.dist-info/RECORD").decode()
    head, body = metadata.decode().split("\n\n", 1)
    commit = json.loads((REPO / "vendor" / "llama.cpp" / "pin.json").read_text())["commit"]
    assert f"Project-URL: llama.cpp, https://github.com/ggml-org/llama.cpp/tree/{commit}" in head.splitlines()
    assert {"Requires-Dist: cffi>=1.17", "Requires-Dist: nvidia-cuda-runtime>=13.0,<14",
            "Requires-Dist: nvidia-cublas>=13.0,<14"} <= set(head.splitlines())
    assert body == "# pyllama\nbody\n"
    digest = base64.urlsafe_b64encode(hashlib.sha256(metadata).digest()).rstrip(b"=").decode()
    assert f"pyllama_cffi-0.1.0.dist-info/METADATA,sha256={digest},{len(metadata)}" in record.splitlines()
    assert record.count("dist-info/METADATA,") == 1


def test_cpu_wheel_gets_the_commit_but_no_cuda_dependency(tmp_path):
    sys.path.insert(0, str(REPO / "wheels"))
    try:
        from metadata import add_headers, prebuilt_headers, read_headers
    finally:
        sys.path.remove(str(REPO / "wheels"))
    wheel = tmp_path / "pyllama_cffi-0.1.0-cp39-abi3-linux_x86_64.whl"
    _wheel_with_metadata(wheel)
    add_headers(wheel, prebuilt_headers(None))
    headers = read_headers(wheel)
    assert [value for name, value in headers if name == "Requires-Dist"] == ["cffi>=1.17"]
    assert any(name == "Project-URL" and value.startswith("llama.cpp, ") for name, value in headers)
