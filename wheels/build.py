"""Build a prebuilt wheel for one backend: ``python wheels/build.py --backend cpu|cuda|vulkan|metal``.

- cpu: upstream's dynamic backend loading with every CPU variant (GGML_BACKEND_DL,
  GGML_CPU_ALL_VARIANTS), so one wheel picks AVX2/AVX-512/... kernels on the user's CPU.
- cuda: nvcc for ``--cuda-architectures`` (default "75;80;86;89;90"), cuBLAS from NVIDIA's
  pip wheels (``nvidia-cublas``), the driver's libcuda found at run time (GGML_CUDA_NO_VMM).
- vulkan: needs the Vulkan SDK. metal: macOS arm64 only (see wheels/cibuildwheel.toml).

Linux wheels go through ``auditwheel repair`` (manylinux tag; the CUDA libraries are excluded,
they come from their own wheels). The result lands in wheels/dist/<backend>/, with its size
and the build time printed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DIST = ROOT / "wheels" / "dist"
CUDA_EXCLUDES = ["libcuda.so.1", "libcudart.so.13", "libcublas.so.13", "libcublasLt.so.13",
                 "libcudart.so.12", "libcublas.so.12", "libcublasLt.so.12"]


def cmake_args(args: argparse.Namespace) -> list[str]:
    if args.backend == "cpu":
        return ["-DGGML_BACKEND_DL=ON", "-DGGML_CPU_ALL_VARIANTS=ON", "-DGGML_NATIVE=OFF"]
    if args.backend == "cuda":
        import nvidia  # from `pip install nvidia-cublas==13.*` (headers and libraries)

        cu = Path(list(nvidia.__path__)[0]) / f"cu{args.cuda_version}"
        links = Path(tempfile.mkdtemp(prefix="cublas-"))
        for name in ("cublas", "cublasLt"):
            (links / f"lib{name}.so").symlink_to(next((cu / "lib").glob(f"lib{name}.so.*")))
        return ["-DGGML_CUDA=ON", "-DGGML_NATIVE=OFF", "-DGGML_CUDA_NO_VMM=ON",
                f"-DCMAKE_CUDA_ARCHITECTURES={args.cuda_architectures}",
                f"-DCUDA_cublas_LIBRARY={links / 'libcublas.so'}", f"-DCUDA_cublasLt_LIBRARY={links / 'libcublasLt.so'}",
                f"-DCMAKE_CUDA_FLAGS=-I{cu / 'include'}", f"-DCMAKE_CXX_FLAGS=-I{cu / 'include'}",
                "-DCMAKE_INSTALL_RPATH=$ORIGIN;$ORIGIN/../nvidia/cu13/lib;$ORIGIN/../nvidia/cu12/lib"]
    if args.backend == "vulkan":
        return ["-DGGML_VULKAN=ON", "-DGGML_NATIVE=OFF"]
    if sys.platform != "darwin":
        raise SystemExit("the Metal wheel builds on macOS arm64 only (wheels/cibuildwheel.toml)")
    return ["-DGGML_METAL=ON", "-DGGML_METAL_EMBED_LIBRARY=ON", "-DGGML_NATIVE=OFF"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("cpu", "cuda", "vulkan", "metal"), required=True)
    parser.add_argument("--cuda-version", default="13", choices=("12", "13"))
    parser.add_argument("--cuda-architectures", default="75;80;86;89;90")
    parser.add_argument("--no-repair", action="store_true", help="skip auditwheel (e.g. for a quick local test)")
    args = parser.parse_args()
    label = f"cu{args.cuda_version}" if args.backend == "cuda" else args.backend
    out = DIST / label
    out.mkdir(parents=True, exist_ok=True)
    raw = Path(tempfile.mkdtemp(prefix="pyllama-wheel-"))
    env = {**os.environ, "CMAKE_ARGS": " ".join(cmake_args(args))}
    start = time.monotonic()
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", str(ROOT), "-w", str(raw),
                    "--config-settings=build-dir=" + str(ROOT / "build" / f"wheel-{label}")], env=env, check=True)
    wheel = next(raw.glob("*.whl"))
    if sys.platform.startswith("linux") and not args.no_repair:
        excludes = [arg for lib in CUDA_EXCLUDES for arg in ("--exclude", lib)] if args.backend == "cuda" else []
        subprocess.run([sys.executable, "-m", "auditwheel", "repair", str(wheel), "-w", str(out), *excludes],
                       check=True)
    else:
        shutil.copy2(wheel, out / wheel.name)
    elapsed = time.monotonic() - start
    for built in out.glob("*.whl"):
        print(f"{built}: {built.stat().st_size / 2**20:.1f} MiB, built in {elapsed / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
