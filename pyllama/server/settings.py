"""Server settings from command-line flags, falling back to environment variables.

Flags use llama-cpp-python's names (``--n_ctx``; ``--n-ctx`` works too); each also reads
the upper-case environment variable (``N_CTX``), so a docker compose file can set them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path


@dataclasses.dataclass
class Settings:
    model: str
    model_alias: str = ""
    host: str = "127.0.0.1"
    port: int = 8000
    n_ctx: int = 4096
    n_gpu_layers: int = 0
    n_threads: int | None = None
    n_threads_batch: int | None = None
    n_batch: int = 512
    n_parallel: int = 4
    max_queue: int = 64
    chat_format: str | None = None
    embedding: bool = False
    use_mlock: bool = False
    use_mmap: bool = True
    flash_attn: bool | None = None
    api_keys: frozenset[str] = frozenset()
    ssl_keyfile: str | None = None
    ssl_certfile: str | None = None
    started: int = dataclasses.field(default_factory=lambda: int(time.time()))

    def __post_init__(self) -> None:
        self.model_alias = self.model_alias or Path(self.model).name

    @property
    def model_id(self) -> str:
        return self.model


def _flag(value: str) -> bool:
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


OPTIONS = [  # name, type, help
    ("model", str, "path of the GGUF model"),
    ("model_alias", str, "name the API shows for the model (default: the file name)"),
    ("host", str, "address to listen on (default 127.0.0.1)"),
    ("port", int, "port (default 8000)"),
    ("n_ctx", int, "context size shared by all slots (default 4096)"),
    ("n_gpu_layers", int, "layers to offload to the GPU (-1: all)"),
    ("n_threads", int, "threads for generation"),
    ("n_threads_batch", int, "threads for prompt processing"),
    ("n_batch", int, "tokens per decode step (default 512)"),
    ("n_parallel", int, "requests generated at once (default 4)"),
    ("max_queue", int, "requests that may wait before the server answers 503 (default 64)"),
    ("chat_format", str, "named chat format or jinja template (default: the model's own)"),
    ("embedding", _flag, "also serve /v1/embeddings"),
    ("use_mlock", _flag, "lock the model in memory"),
    ("use_mmap", _flag, "memory-map the model (default true)"),
    ("flash_attn", _flag, "flash attention (default: automatic)"),
    ("api_key", str, "require this key (Authorization: Bearer KEY)"),
    ("api_keys_file", str, "require one of the keys in this file, one per line"),
    ("ssl_keyfile", str, "TLS key file"),
    ("ssl_certfile", str, "TLS certificate file"),
    ("config", str, "JSON file serving several models: {\"models\": [{\"model\": ..., \"model_alias\": ...}, ...]} "
                    "plus any server option at the top level"),
]
SERVER_WIDE = {"host", "port", "api_key", "api_keys_file", "ssl_keyfile", "ssl_certfile", "max_queue"}


def parse(argv: Sequence[str] | None = None) -> Settings | list[Settings]:
    """Settings from flags and environment; with ``--config``, one Settings per model."""
    parser = argparse.ArgumentParser(prog="python -m pyllama.server",
                                     description="OpenAI-compatible server for a GGUF model")
    for name, kind, help_text in OPTIONS:
        names = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
        parser.add_argument(*names, dest=name, type=kind, default=None, help=f"{help_text} [env {name.upper()}]")
    args = parser.parse_args(argv)
    values = {}
    for name, kind, _ in OPTIONS:
        value = getattr(args, name)
        if value is None and name.upper() in os.environ:
            try:
                value = kind(os.environ[name.upper()])
            except (ValueError, argparse.ArgumentTypeError) as exc:
                parser.error(f"environment variable {name.upper()}: {exc}")
        if value is not None:
            values[name] = value
    config = values.pop("config", None)
    if config is None:
        if "model" not in values:
            values["model"] = _demo_model(parser)
        return _settings(parser, values)
    try:
        loaded = json.loads(Path(config).read_text())
        entries = loaded.pop("models")
    except (OSError, ValueError, KeyError, AttributeError) as exc:
        parser.error(f"cannot read the config file {config}: {exc}")
    known = {name for name, _, _ in OPTIONS} - {"config"}
    unknown = (set(loaded) | {k for e in entries for k in e}) - known
    if unknown:
        parser.error(f"unknown settings in {config}: {', '.join(sorted(unknown))}")
    server = {**loaded, **{k: v for k, v in values.items() if k in SERVER_WIDE}}
    models = [_settings(parser, {**{k: v for k, v in values.items() if k not in SERVER_WIDE and k != "model"},
                                 **entry, **server}) for entry in entries]
    aliases = [m.model_alias for m in models]
    if len(set(aliases)) != len(aliases):
        parser.error(f"model aliases must differ: {aliases}")
    return models


def _demo_model(parser: argparse.ArgumentParser) -> str:
    """No --model or MODEL: the demo model when installed, else one line saying how to get a model."""
    from .. import demo

    try:
        return demo.default_model()
    except demo.NoModelError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    except (OSError, ValueError) as exc:  # a full disk or a corrupt chunk while assembling it
        parser.exit(1, f"{parser.prog}: error: cannot assemble the demo model: {exc}\n")


def _settings(parser: argparse.ArgumentParser, values: dict) -> Settings:
    values = dict(values)
    if "model" not in values:
        parser.error("a model is required: --model PATH or MODEL=PATH")
    if not Path(values["model"]).is_file():
        parser.error(f"model file not found: {values['model']}")
    keys = set()
    if "api_key" in values:
        keys.add(values.pop("api_key"))
    if "api_keys_file" in values:
        path = values.pop("api_keys_file")
        try:
            keys |= {line.strip() for line in Path(path).read_text().splitlines() if line.strip()}
        except OSError as exc:
            parser.error(f"cannot read the API keys file: {exc}")
    return Settings(**values, api_keys=frozenset(keys))
