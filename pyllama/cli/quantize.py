"""``pyllama quantize IN OUT TYPE``: llama.cpp's quantizer, every type it offers."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import sys
from pathlib import Path


def quant_types() -> dict[str, int]:
    """Type name (as llama.cpp's quantize spells it) -> llama_ftype, for every type this build knows."""
    from ..enums import FileType

    members = sorted(FileType.__members__.items(), key=lambda item: int(item[1]))
    return {name.removeprefix("MOSTLY_"): int(value) for name, value in members
            if name.startswith("MOSTLY_") or name == "ALL_F32"}


# mixes whose main tensor type their name does not spell (llama.cpp's llama-quant.cpp)
MAIN_TYPE = {"IQ3_XS": "IQ3_S", "IQ3_M": "IQ3_S", "IQ2_M": "IQ2_S", "IQ2_S": "IQ2_XS"}


def bits_per_weight(name: str) -> float | None:
    from .._binding import lib
    from ..enums import GGMLType

    base = MAIN_TYPE.get(name, name).replace("ALL_", "").split("_")
    for size in (len(base), 2, 1):  # Q4_K_M -> Q4_K, IQ2_XXS -> IQ2_XXS
        candidate = "_".join(base[:size])
        if candidate in GGMLType.__members__:
            kind = GGMLType[candidate]
            return 8.0 * lib.ggml_type_size(kind) / lib.ggml_blck_size(kind)
    return None


def type_table() -> str:
    lines = ["types (bits per weight of the main tensor type; mixes such as _S/_M/_L vary per tensor):"]
    for name, value in quant_types().items():
        bpw = bits_per_weight(name)
        lines.append(f"  {value:3d}  {name:<12} {f'{bpw:5.2f} bpw' if bpw else ''}")
    return "\n".join(lines)


@contextlib.contextmanager
def _progress_from_log(label: str):
    """A progress bar on stderr, driven by the "[  i/  n] tensor ..." lines llama.cpp logs
    for each tensor (llama_model_quantize has no progress callback)."""
    from .._progress import progress_bar
    from .._binding.log import logger

    bar = progress_bar(sys.stderr, label) if sys.stderr.isatty() else None

    class Tensors(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            match = re.match(r"\[\s*(\d+)/\s*(\d+)\]", record.getMessage())
            if match and bar is not None:
                bar(int(match.group(1)) / int(match.group(2)))

    handler, level = Tensors(), logger.level
    logger.addHandler(handler)
    logger.setLevel(min(level or logging.INFO, logging.INFO))
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _failure(model: str) -> Exception:
    """Why quantizing failed. llama.cpp's refusal to requantize names the type of the first
    quantized tensor it met (q5_0 in a Q4_K_M model); say what is true and what to do instead."""
    from .._binding import checks
    from ..enums import FileType
    from ..errors import LlamaError
    from ..model import Model

    reason = checks.reason()
    if "requantizing from type" not in reason:
        return LlamaError(f"quantizing {model} failed: {reason}")
    with Model(model, vocab_only=True) as loaded:  # the type the file says it has (vocab_only knows no ftype)
        kind = loaded.metadata.get("general.file_type", "")
    try:
        kind = FileType(int(kind)).name.removeprefix("MOSTLY_")
    except ValueError:
        kind = kind or "type unknown"
    return LlamaError(f"{model} is already quantized ({kind}); quantizing it again loses more quality than "
                      "quantizing its F16/BF16/F32 original: pass --allow-requantize to do it anyway")


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("quantize", help="quantize a GGUF model", epilog=type_table(),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("type", help="quantization type, e.g. Q4_K_M (see below)")
    parser.add_argument("--allow-requantize", action="store_true", help="allow quantizing already quantized tensors")
    parser.add_argument("--leave-output-tensor", action="store_true", help="keep output.weight unquantized")
    parser.add_argument("--pure", action="store_true", help="use the type for every tensor (no mixes)")
    parser.add_argument("--imatrix", help="importance matrix GGUF from llama-imatrix")
    parser.add_argument("-t", "--threads", dest="nthread", type=int, default=0)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from .._binding import checks, ffi, lib
    from ..errors import LlamaError
    from ..gguf_check import check_gguf

    types = quant_types()
    name = args.type.upper()
    if name not in types and not name.isdigit():
        raise LlamaError(f"unknown quantization type {args.type!r}; run 'pyllama quantize --help' for the list")
    ftype = types.get(name, int(name) if name.isdigit() else 0)
    if not Path(args.input).is_file():
        raise FileNotFoundError(f"model file not found: {args.input}")
    check_gguf(args.input)
    if not Path(args.output).resolve().parent.is_dir():
        raise FileNotFoundError(f"the folder for {args.output} does not exist")
    params = ffi.new("llama_model_quantize_params *", lib.llama_model_quantize_default_params())
    params.ftype = ftype
    params.nthread = args.nthread
    params.allow_requantize = args.allow_requantize
    params.quantize_output_tensor = not args.leave_output_tensor
    params.pure = args.pure
    if args.imatrix:  # the C arrays below live until this function returns, past the quantize call
        from ..imatrix import load_imatrix

        entries = load_imatrix(args.imatrix)
        names = [ffi.new("char[]", weight.encode()) for weight in entries]
        arrays = [ffi.from_buffer("float[]", values) for values in entries.values()]
        table = ffi.new("struct llama_model_imatrix_data[]", len(entries) + 1)  # ends with a NULL name
        for item, c_name, array, values in zip(table, names, arrays, entries.values()):
            item.name, item.data, item.size = c_name, array, len(values)
        params.imatrix = table
        print(f"imatrix: {len(entries)} weights from {args.imatrix}")
    # written under a temporary name and renamed when complete: a failed or interrupted run leaves no file behind
    output = Path(args.output)
    partial = output.with_name(f".{output.name}.{os.getpid()}.partial")
    try:
        checks.before_call()
        with _progress_from_log(f"quantizing to {name}"):
            failed = lib.llama_model_quantize(os.fsencode(args.input), os.fsencode(partial), params) != 0
        if failed:
            raise _failure(args.input)
        os.replace(partial, output)
    finally:
        partial.unlink(missing_ok=True)
    before, after = Path(args.input).stat().st_size, output.stat().st_size
    print(f"{args.input} ({before / 2**20:.1f} MiB) -> {args.output} ({after / 2**20:.1f} MiB, {name})")
    return 0
