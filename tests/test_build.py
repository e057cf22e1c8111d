"""The build: legacy flags, missing backends, the pinned source and what lands in the package."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cmake import CMAKE_BIN_DIR

from conftest import REPO
from pyllama import _pyllama_cffi

CMAKE = str(Path(CMAKE_BIN_DIR) / "cmake")
PROBES = REPO / "tests" / "cmake"
# Where the compiled parts were installed (in an editable install, not the source folder).
PACKAGE = Path(_pyllama_cffi.__file__).parent
MATERIALIZE = REPO / "vendor" / "llama.cpp" / "materialize.py"


def configure(probe: str, build_dir: Path, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([CMAKE, "-S", str(PROBES / probe), "-B", str(build_dir), *flags],
                          capture_output=True, text=True)


def probed_values(output: str) -> dict[str, str]:
    return dict(line[len("probe: "):].split("=", 1) for line in output.splitlines()
                if line.startswith("probe: ") and "=" in line)


@pytest.mark.parametrize("flags, expected, message", [
    (["-DLLAMA_CUBLAS=on"], {"GGML_CUDA": "on"}, "-DLLAMA_CUBLAS=on is an old flag name; using -DGGML_CUDA=on"),
    (["-DLLAMA_CUDA=ON"], {"GGML_CUDA": "ON"}, "using -DGGML_CUDA=ON"),
    (["-DLLAMA_OPENBLAS=on"], {"GGML_BLAS": "ON", "GGML_BLAS_VENDOR": "OpenBLAS"},
     "using -DGGML_BLAS=ON -DGGML_BLAS_VENDOR=OpenBLAS"),
    (["-DLLAMA_BLAS=ON", "-DLLAMA_BLAS_VENDOR=Intel10_64lp"], {"GGML_BLAS": "ON", "GGML_BLAS_VENDOR": "Intel10_64lp"},
     "using -DGGML_BLAS_VENDOR=Intel10_64lp"),
    (["-DLLAMA_METAL=on"], {"GGML_METAL": "on"}, "using -DGGML_METAL=on"),
    (["-DLLAMA_CLBLAST=on"], {"GGML_OPENCL": "on"}, "CLBlast was removed from llama.cpp"),
    (["-DLLAMA_HIPBLAS=on"], {"GGML_HIP": "on"}, "using -DGGML_HIP=on"),
    (["-DLLAMA_VULKAN=on"], {"GGML_VULKAN": "on"}, "using -DGGML_VULKAN=on"),
    (["-DLLAMA_NATIVE=off"], {"GGML_NATIVE": "off"}, "using -DGGML_NATIVE=off"),
])
def test_legacy_flags_map_to_ggml_flags(tmp_path, flags, expected, message):
    result = configure("legacy_flags", tmp_path, *flags)
    assert result.returncode == 0, result.stderr
    values = probed_values(result.stderr)
    for flag, value in expected.items():
        assert values[flag] == value
    assert not any(name.startswith("LLAMA_") for name in values), "old names must not reach llama.cpp"
    assert message in result.stderr
    notices = [line for line in result.stderr.splitlines() if line.startswith("pyllama:")]
    assert len(notices) == len([f for f in flags if f.startswith("-DLLAMA_")]), notices


def test_clblast_suggests_vulkan(tmp_path):
    result = configure("legacy_flags", tmp_path, "-DLLAMA_CLBLAST=on")
    assert "PR #7735" in result.stderr and "-DGGML_VULKAN=on" in result.stderr


def test_requested_backend_without_its_target_fails_instead_of_building_for_cpu(tmp_path):
    result = configure("require_backends", tmp_path, "-DGGML_VULKAN=on")
    assert result.returncode != 0
    said = " ".join(result.stderr.split())  # CMake wraps long messages
    assert "-DGGML_VULKAN=ON was requested but the ggml-vulkan backend could not be configured" in said
    assert "libvulkan-dev" in said and "Refusing to build a CPU-only library" in said
    assert "probe: configured" not in said


def test_cpu_only_configuration_passes_the_backend_check(tmp_path):
    result = configure("require_backends", tmp_path)
    assert result.returncode == 0, result.stderr


def test_missing_gpu_toolkit_fails_the_real_configure(tmp_path, llama_cpp_dir):
    # Without the Vulkan SDK (CI's machine) the real build must stop, naming what is missing.
    if shutil.which("glslc") and Path("/usr/include/vulkan/vulkan.h").exists():
        pytest.skip("this machine has a Vulkan SDK")
    result = subprocess.run([CMAKE, "-S", str(REPO), "-B", str(tmp_path), "-DGGML_VULKAN=on"],
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert "Vulkan" in result.stderr


def test_missing_blas_library_is_one_line_naming_what_to_install(tmp_path, llama_cpp_dir):
    # BLIS (vendor FLAME) is not what CI installs; the check runs before llama.cpp is configured
    if list(Path("/usr/lib").glob("**/libblis.so*")):
        pytest.skip("this machine has BLIS")
    result = subprocess.run([CMAKE, "-S", str(REPO), "-B", str(tmp_path), "-DGGML_BLAS=ON", "-DGGML_BLAS_VENDOR=FLAME"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    errors = [line.strip() for line in result.stderr.splitlines() if "pyllama:" in line]
    assert errors == ["pyllama: -DGGML_BLAS=ON needs the FLAME BLAS library, which was not found; install it "
                      "(Debian/Ubuntu: apt-get install libblis-dev) or leave -DGGML_BLAS out for a CPU build "
                      "without BLAS."], result.stderr
    assert "FindBLAS" not in result.stderr + result.stdout and "-- Configuring incomplete" in result.stdout


def run_materialize(dest: Path, cache: Path, *args: str) -> subprocess.CompletedProcess:
    (dest / "pin.json").write_bytes((MATERIALIZE.parent / "pin.json").read_bytes())
    script = dest / "materialize.py"
    script.write_bytes(MATERIALIZE.read_bytes())
    return subprocess.run([sys.executable, str(script), "--cache-dir", str(cache), *args],
                          capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "PIP_INDEX_URL": "http://127.0.0.1:9/"})


def test_tampered_cached_artifact_is_reported_and_not_extracted(tmp_path):
    pin = json.loads((MATERIALIZE.parent / "pin.json").read_text())
    dest, cache = tmp_path / "tree", tmp_path / "cache"
    dest.mkdir(), cache.mkdir()
    tampered = cache / pin["artifact"]["filename"]
    tampered.write_bytes(b"not the pinned artifact")
    result = run_materialize(dest, cache)
    assert result.returncode == 1
    actual = hashlib.sha256(b"not the pinned artifact").hexdigest()
    assert f"sha256 {actual} does not match the pinned {pin['artifact']['sha256']}" in result.stderr
    assert str(tampered) in result.stderr
    assert sorted(p.name for p in dest.iterdir()) == ["materialize.py", "pin.json"]


def test_artifact_given_by_path_is_hash_checked_too(tmp_path):
    dest, cache = tmp_path / "tree", tmp_path / "cache"
    dest.mkdir(), cache.mkdir()
    fake = tmp_path / "fake.tar.gz"
    fake.write_bytes(b"\x1f\x8b fake")
    result = run_materialize(dest, cache, "--artifact", str(fake))
    assert result.returncode == 1 and "does not match the pinned" in result.stderr


def test_unreachable_index_names_the_ways_out(tmp_path):
    dest, cache = tmp_path / "tree", tmp_path / "cache"
    dest.mkdir(), cache.mkdir()
    result = run_materialize(dest, cache)
    assert result.returncode == 1
    assert "PYLLAMA_LLAMA_CPP_ARTIFACT" in result.stderr and "PYLLAMA_LLAMA_CPP_DIR" in result.stderr


def test_materialized_tree_matches_the_pin(llama_cpp_dir):
    pin = json.loads((llama_cpp_dir / "pin.json").read_text())
    assert (llama_cpp_dir / ".materialized").read_text().split() == [pin["artifact"]["sha256"], pin["commit"]]
    for excluded in pin["exclude"]:
        assert not (llama_cpp_dir / excluded).exists(), excluded
    assert (llama_cpp_dir / "gguf-py").is_dir() and (llama_cpp_dir / "convert_hf_to_gguf.py").is_file()


def test_every_built_library_is_inside_the_package_with_origin_rpath():
    libraries = sorted(p.name for p in PACKAGE.iterdir() if ".so" in p.name or p.suffix in (".dylib", ".dll"))
    assert {"libllama.so", "libggml.so", "libggml-base.so", "libggml-rpc.so"} <= set(libraries)
    # one CPU backend, or with GGML_CPU_ALL_VARIANTS (the prebuilt wheel) one per instruction set
    assert "libggml-cpu.so" in libraries or any(name.startswith("libggml-cpu-") for name in libraries)
    assert not any(name.endswith((".so.0", ".so.1")) for name in libraries), "versioned copies bloat the wheel"
    module = next(PACKAGE.glob("_pyllama_cffi*.so"))
    dynamic = subprocess.run(["readelf", "-d", str(module)], capture_output=True, text=True).stdout
    assert "$ORIGIN" in dynamic
    needed = [line.split("[")[1].rstrip("]") for line in dynamic.splitlines() if "(NEEDED)" in line]
    for library in needed:
        if library.startswith(("libllama", "libggml")):
            assert (PACKAGE / library).exists(), library


def test_both_licenses_ship_and_are_named_in_the_metadata(llama_cpp_dir):
    from importlib.metadata import distribution

    installed = distribution("pyllama-cffi")
    assert installed.metadata["License-Expression"] == "MIT"
    assert installed.metadata.get_all("License-File") == ["LICENSE", "LICENSE-llama.cpp"]
    shipped = {file.name: file for file in installed.files if "licenses" in file.parts}
    assert shipped["LICENSE"].read_text() == (REPO / "LICENSE").read_text()
    # the copy at the root is the license of the pinned tree, word for word
    assert shipped["LICENSE-llama.cpp"].read_text() == (llama_cpp_dir / "LICENSE").read_text()
