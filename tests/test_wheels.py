"""wheels/: the PEP 503 index per backend, and the metadata stamped into prebuilt wheels."""

from __future__ import annotations

import hashlib
import os
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


PREBUILT_MODE_CHECK = """
import sys
import pyllama
from pyllama import LlamaError, Model, system_info
from pyllama._binding import BUILD_FLAGS, LIBRARY_DIR

assert LIBRARY_DIR.is_relative_to(sys.argv[1]), LIBRARY_DIR  # the wheel, not the editable install
assert BUILD_FLAGS["GGML_BACKEND_DL"] == "ON"
assert {"CPU", "RPC"} <= set(system_info().backends), system_info().backends
llm = pyllama.Llama(sys.argv[2], n_ctx=64, seed=1)
assert llm("hello", max_tokens=4)["usage"]["completion_tokens"] == 4
try:
    Model(sys.argv[2], rpc_servers=[f"127.0.0.1:{sys.argv[3]}"], n_gpu_layers=-1)
except LlamaError as error:
    print("rpc:", error)
"""


def test_wheel_with_backends_as_modules_generates_and_reaches_rpc(tmp_path, tiny_spm):
    """The prebuilt wheels' mode (GGML_BACKEND_DL): the CPU and RPC backends are modules loaded
    at import, not libraries the bindings link; a wheel built so must still do everything."""
    import socket
    import sysconfig
    import zipfile

    env = {**os.environ, "CMAKE_ARGS": "-DGGML_BACKEND_DL=ON -DGGML_NATIVE=OFF"}  # one CPU module (fast to build)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", str(REPO),
                            "-w", str(tmp_path / "dist"), f"--config-settings=build-dir={tmp_path / 'build'}"],
                           env=env, capture_output=True, text=True)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    unpacked = tmp_path / "site"
    with zipfile.ZipFile(next((tmp_path / "dist").glob("*.whl"))) as wheel:
        wheel.extractall(unpacked)
    for library in unpacked.glob("pyllama/*.so"):
        library.chmod(0o755)  # zipfile drops the mode bits pip would restore

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # -S: no .pth files, so the editable install's import hook cannot shadow the unpacked wheel
    path = os.pathsep.join([str(unpacked), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    run = subprocess.run([sys.executable, "-S", "-c", PREBUILT_MODE_CHECK, str(unpacked), str(tiny_spm[0]), str(port)],
                         env={**os.environ, "PYTHONPATH": path}, capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert f"127.0.0.1:{port}" in run.stdout
