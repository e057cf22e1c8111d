"""Generate the C source of the cffi module from llama.cpp's public headers.

No hand-maintained copy of ``llama.h`` (or of libmtmd's ``mtmd.h``) exists: at build time
the headers are run through the C preprocessor (export macros and attributes defined away, system
headers replaced by stubs), parsed with pycparser, stripped of what cffi cannot
take (inline function bodies, static asserts), and fed to cffi's out-of-line API
mode, which emits a C file that CMake compiles and links against libllama.

    python cmake/generate_cffi.py --out _pyllama_cffi.c --cc cc \
        --include-dir ggml/include --include-dir include \
        --header llama.h --header ggml-backend.h [--header ggml-rpc.h] --header mtmd.h \
        --library libllama.so --library libggml.so ... \
        --version 0.1.0 --commit 0c1e570 --build-flags "GGML_RPC=ON ..."
"""

from __future__ import annotations

import argparse
import ctypes
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import cffi
import pycparser
from pycparser import c_ast, c_generator

# Types the stub system headers declare so pycparser can parse; cffi knows them natively.
STUB_TYPEDEFS = """
typedef int size_t; typedef int ptrdiff_t; typedef int intptr_t; typedef int uintptr_t;
typedef int int8_t; typedef int int16_t; typedef int int32_t; typedef int int64_t;
typedef int uint8_t; typedef int uint16_t; typedef int uint32_t; typedef int uint64_t;
typedef int bool; typedef int FILE; typedef int va_list;
"""

DEFINED_AWAY = {
    "__attribute__(x)": "",
    "__declspec(x)": "",
    "__restrict": "",
    "__restrict__": "",
    "restrict": "",
    "_Noreturn": "",
    "__inline": "inline",
    "static_assert(...)": "",
    "_Static_assert(...)": "",
    "__extension__": "",
}

INT_MACRO = re.compile(r"#define ((?:LLAMA|GGML|GGUF|MTMD)_[A-Z0-9_]+) (-?(?:0x[0-9a-fA-F]+|[0-9]+)[uUlL]*)$")

# Python functions that C calls back (log, progress, abort); their trampolines live in the module.
CALLBACKS = """
extern "Python" void _pyllama_on_log(enum ggml_log_level level, const char * text, void * user_data);
extern "Python" bool _pyllama_on_progress(float progress, void * user_data);
extern "Python" bool _pyllama_on_abort(void * user_data);
"""

# Calls wrapped in csrc/guarded_calls.cpp so that a GGML_ASSERT or C++ exception in them becomes an error.
GUARDED_CALLS = """
struct llama_model * pyllama_model_load(const char * path, struct llama_model_params params);
struct llama_context * pyllama_context_init(struct llama_model * model, struct llama_context_params params);
ggml_backend_reg_t pyllama_rpc_add_server(const char * endpoint);
llama_token pyllama_sampler_sample(struct llama_sampler * sampler, struct llama_context * ctx, int32_t idx);
bool pyllama_sampler_accept(struct llama_sampler * sampler, llama_token token);
bool pyllama_sampler_apply(struct llama_sampler * sampler, llama_token_data_array * candidates);
bool pyllama_sampler_reset(struct llama_sampler * sampler);
struct llama_sampler * pyllama_sampler_init_grammar(const struct llama_vocab * vocab, const char * grammar,
                                                    const char * root);
struct llama_sampler * pyllama_sampler_init_grammar_lazy_patterns(
    const struct llama_vocab * vocab, const char * grammar, const char * root, const char ** trigger_patterns,
    size_t n_trigger_patterns, const llama_token * trigger_tokens, size_t n_trigger_tokens);
bool pyllama_image_size(const unsigned char * buf, size_t len, int * width, int * height);
mtmd_context * pyllama_mtmd_init(const char * path, const struct llama_model * model, struct mtmd_context_params params);
mtmd_bitmap * pyllama_mtmd_bitmap_from_buf(const mtmd_context * ctx, const unsigned char * buf, size_t len);
mtmd_bitmap * pyllama_mtmd_bitmap_init(uint32_t nx, uint32_t ny, const unsigned char * data);
mtmd_bitmap * pyllama_mtmd_bitmap_init_from_audio(size_t n_samples, const float * data);
int32_t pyllama_mtmd_tokenize(const mtmd_context * ctx, mtmd_input_chunks * output,
                              const mtmd_input_part * const * parts, size_t n_parts, bool add_special);
int32_t pyllama_mtmd_encode_chunk(mtmd_context * ctx, const mtmd_input_chunk * chunk);
int32_t pyllama_mtmd_decode_chunk(mtmd_context * ctx, struct llama_context * lctx, const mtmd_input_chunk * chunk,
                                  float * embd, llama_pos n_past, llama_seq_id seq_id, int32_t n_batch,
                                  llama_pos * new_n_past);
const char * pyllama_last_failure(void);
"""

# What the compiled module knows about its own build, checked by pyllama._ffi at import.
BUILD_INFO_CDEF = """
const char * pyllama_build_version(void);
const char * pyllama_llama_cpp_commit(void);
const char * pyllama_build_flags(void);
"""


def c_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def system_headers(include_dirs: list[Path]) -> set[str]:
    names: set[str] = set()
    for directory in include_dirs:
        for header in directory.glob("*.h"):
            names.update(re.findall(r"#\s*include\s*<([^>]+)>", header.read_text(errors="replace")))
    return names


def preprocess(cc: str, entry: str, include_dirs: list[Path], extra: list[str]) -> str:
    with tempfile.TemporaryDirectory() as stubs:
        for name in system_headers(include_dirs):
            stub = Path(stubs) / name
            stub.parent.mkdir(parents=True, exist_ok=True)
            stub.write_text("")
        (Path(stubs) / "__pyllama_stub_types.h").write_text(STUB_TYPEDEFS)
        source = Path(stubs) / "__pyllama_entry.h"
        source.write_text('#include "__pyllama_stub_types.h"\n' + entry)
        command = [cc, "-E", "-nostdinc", "-undef", "-D__STDC__=1", "-I", stubs]
        command += [arg for d in include_dirs for arg in ("-I", str(d))]
        command += [f"-D{name}={value}" for name, value in DEFINED_AWAY.items()]
        command += extra + [str(source)]
        return subprocess.run(command, check=True, capture_output=True, text=True).stdout


class _LetCompilerSizeArrays(c_ast.NodeVisitor):
    """cffi cannot evaluate array sizes like ``64 / sizeof(int32_t)``; ``[...]`` asks the compiler."""

    def visit_ArrayDecl(self, node: c_ast.ArrayDecl) -> None:
        if node.dim is not None and not isinstance(node.dim, c_ast.Constant):
            node.dim = c_ast.ID("...")
        self.generic_visit(node)


def _symbols_from_nm(path: Path) -> set[str] | None:
    """Defined dynamic symbols, read without loading the library (its own dependencies, such
    as cuBLAS for the CUDA backend, need not be loadable at build time)."""
    for command in (["nm", "-D", "--defined-only", str(path)], ["nm", "-gU", str(path)]):
        try:
            result = subprocess.run(command, capture_output=True, text=True, check=True)
        except (OSError, subprocess.CalledProcessError):
            continue
        return {line.split()[-1].lstrip("_") if sys.platform == "darwin" else line.split()[-1]
                for line in result.stdout.splitlines() if line.strip()}
    return None


def exported_by(libraries: list[Path]):
    """A predicate telling whether a function name is exported by the built libraries.

    Headers declare a few functions no library defines; binding them would make the
    module fail to import with an undefined symbol.
    """
    found = [_symbols_from_nm(path) for path in libraries]
    if all(symbols is not None for symbols in found):
        exported = set().union(*found)
        return lambda name: name in exported
    handles = [ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL) for path in libraries]  # no nm: ask the loader
    return lambda name: any(hasattr(handle, name) for handle in handles)


def declarations(preprocessed: str, include_dirs: list[Path], exported) -> str:
    """Top-level declarations from the project headers, without function bodies."""
    ast = pycparser.CParser().parse(preprocessed, "<headers>")
    roots = [str(d.resolve()) for d in include_dirs]
    generator = c_generator.CGenerator()
    keep, seen = [], set()
    for node in ast.ext:
        origin = str(Path(node.coord.file).resolve()) if node.coord else ""
        if not any(origin.startswith(root) for root in roots):
            continue
        if isinstance(node, (c_ast.FuncDef, c_ast.Pragma, c_ast.StaticAssert)):
            continue
        if isinstance(node, c_ast.Decl) and isinstance(node.type, c_ast.FuncDecl) and not exported(node.name):
            print(f"generate_cffi: {node.name} is declared but no library exports it; not bound")
            continue
        _LetCompilerSizeArrays().visit(node)
        text = generator.visit(node)
        if text in seen:  # C11 allows repeating a typedef (ggml-alloc.h and ggml-backend.h do); cffi does not
            continue
        seen.add(text)
        keep.append(node)
    return generator.visit(c_ast.FileAST(keep))


def integer_macros(cc: str, entry: str, include_dirs: list[Path], extra: list[str]) -> str:
    defined = preprocess(cc, entry, include_dirs, ["-dM"] + extra)
    lines = sorted({f"#define {m.group(1)} ..." for m in map(INT_MACRO.match, defined.splitlines()) if m})
    return "\n".join(lines)


def generate(args: argparse.Namespace) -> None:
    include_dirs = [Path(d) for d in args.include_dir]
    entry = "".join(f'#include "{h}"\n' for h in args.header)
    extra = [f"-D{d}" for d in args.define]
    cdef = "\n".join([
        declarations(preprocess(args.cc, entry, include_dirs, extra), include_dirs, exported_by(args.library)),
        integer_macros(args.cc, entry, include_dirs, extra),
        CALLBACKS,
        GUARDED_CALLS,
        BUILD_INFO_CDEF,
    ])
    source = entry + GUARDED_CALLS + f"""
static const char * pyllama_build_version(void) {{ return {c_string(args.version)}; }}
static const char * pyllama_llama_cpp_commit(void) {{ return {c_string(args.commit)}; }}
static const char * pyllama_build_flags(void) {{ return {c_string(args.build_flags)}; }}
"""
    if args.cdef_out:
        Path(args.cdef_out).write_text(cdef)
    ffibuilder = cffi.FFI()
    ffibuilder.cdef(cdef)
    ffibuilder.set_source(args.module, source)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    ffibuilder.emit_c_code(args.out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--cdef-out", help="also write the cdef, for inspection")
    parser.add_argument("--module", default="pyllama._pyllama_cffi")
    parser.add_argument("--cc", default="cc")
    parser.add_argument("--include-dir", action="append", required=True)
    parser.add_argument("--header", action="append", required=True)
    parser.add_argument("--define", action="append", default=[])
    parser.add_argument("--library", action="append", type=Path, default=[],
                        help="a built shared library; functions none of them export are left out")
    parser.add_argument("--version", required=True)
    parser.add_argument("--commit", required=True)
    parser.add_argument("--build-flags", default="")
    generate(parser.parse_args())


if __name__ == "__main__":
    main()
