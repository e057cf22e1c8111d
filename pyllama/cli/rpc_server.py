"""``pyllama rpc-server``: serve this machine's devices to llama.cpp clients over RPC."""

from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("rpc-server", help="serve local devices to other machines (llama.cpp RPC)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("-p", "--port", type=int, default=50052)
    parser.add_argument("-t", "--threads", type=int, default=None, help="CPU threads for the CPU device")
    parser.add_argument("-d", "--device", action="append", default=None, help="device name (repeatable)")
    parser.add_argument("-c", "--cache", default=None, help="directory to cache tensors received")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..rpc import serve

    print(f"pyllama rpc-server listening on {args.host}:{args.port}", flush=True)
    serve(args.host, args.port, devices=args.device, threads=args.threads, cache_dir=args.cache)
    return 0
