"""Server settings from command-line flags, falling back to environment variables.

Both users' commands work: llama-cpp-python's names (``--n_ctx 4096``, ``--n-ctx``,
``--embedding true``) and llama-server's (``-c 4096``, ``--ctx-size``, ``-np``, ``-ngl``,
``--embedding``, ``--no-context-shift``...). Each setting also reads the upper-case
environment variable of its name (``N_CTX``), so a docker compose file can set them.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import NoModelError
from .model_files import cached_entries, cached_repositories, models_dir, preset_sections
from ..placement import (SPLIT_MODES, check_devices, check_overrides, check_split, moe_overrides, offload_devices,
                         parse_devices, parse_overrides, parse_split, parse_split_mode)


@dataclasses.dataclass
class Settings:
    model: str
    model_alias: str = ""  # the name the API shows; more names in aliases
    aliases: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ("127.0.0.1",)
    port: int = 8000
    n_ctx: int = 4096
    n_gpu_layers: int = 0
    # where the weights go (pyllama.placement): llama-server's -dev, -ot, --cpu-moe, --n-cpu-moe, -ts, -mg, -sm
    devices: tuple[str, ...] | None = None
    tensor_overrides: tuple[tuple[str, str], ...] = ()
    cpu_moe: bool = False
    n_cpu_moe: int = 0
    tensor_split: tuple[float, ...] | None = None
    main_gpu: int = 0
    split_mode: str = "layer"
    loras: tuple[tuple[str, float], ...] = ()  # (path, scale) in --lora/--lora-scaled order: their ids
    lora_init_without_apply: bool = False  # loaded at scale 0, applied by POST /lora-adapters or a request
    n_threads: int | None = None
    n_threads_batch: int | None = None
    n_batch: int = 512
    n_ubatch: int = 512
    n_parallel: int = 4
    max_queue: int = 64
    chat_format: str | None = None
    jinja: bool = True  # off: llama.cpp's built-in template handling (llama_chat_apply_template), as llama-server's
    embedding: bool = False
    reranking: bool = False
    pooling: str | None = None
    use_mlock: bool = False
    use_mmap: bool = True
    flash_attn: bool | None = None
    cache_type_k: str | None = None
    cache_type_v: str | None = None
    swa_full: bool = False
    context_shift: bool = False
    temperature: float | None = None  # defaults for requests that do not say
    seed: int | None = None
    n_predict: int | None = None
    cors_origins: tuple[str, ...] = ()
    slot_save_path: str | None = None
    cache_ram_mib: int = 0
    cache_idle_slots: bool = True  # with cache_ram_mib: a new task stashes the idle slots' KV there and frees it
    model_draft: str | None = None
    spec_type: str | None = None
    draft_max: int = 16
    draft_min: int = 0
    api_keys: frozenset[str] = frozenset()
    ssl_keyfile: str | None = None
    ssl_certfile: str | None = None
    verbose: bool = False
    webui: bool = True
    slots: bool = True
    thinking: str = "auto"
    kv_unified: bool = True
    metrics: bool = False
    stop_timeout: float = 10.0  # seconds running requests get to finish after a stop signal
    mmproj: str | None = None  # multimodal projector: images (and audio) in chat messages
    allow_remote_media: bool = False  # let requests name http(s) image URLs the server downloads
    media_max_bytes: int = 20 << 20
    media_path: str | None = None  # folder that file:// image URLs name files in (llama-server's --media-path)
    # the model lifecycle (server/model_pool.py): per model...
    sleep_idle_seconds: float = -1  # unload after this long without requests (-1: never); reload on the next
    load_on_startup: bool = True
    # ...and server-wide (llama-server's router mode)
    router: bool = False  # models declared by --models-dir or --models-preset: /props says role "router"
    source: str = ""  # router mode: where it was found (llama-server's cache, models_dir or preset)
    hidden: bool = False  # a cached model a preset's dedup-cache-models hides from GET /models (still served)
    models_max: int = 4  # models loaded at once (0: no limit)
    models_memory_mib: int = 0  # MiB of model files loaded at once (0: no limit)
    models_autoload: bool = True  # a request for a model not loaded loads it
    started: int = dataclasses.field(default_factory=lambda: int(time.time()))
    # router mode: the models the flags and files declare now (GET /models?reload=1); ValueError if they are wrong
    reread: Callable[[], list[Settings]] | None = dataclasses.field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        self.model_alias = self.model_alias or Path(self.model).name

    @property
    def model_id(self) -> str:
        return self.model

    @property
    def host(self) -> str:
        return self.hosts[0]

    def model_options(self) -> dict[str, Any]:
        """Model's keyword arguments for loading this model: memory and placement."""
        return {"n_gpu_layers": self.n_gpu_layers, "use_mlock": self.use_mlock, "use_mmap": self.use_mmap,
                "devices": self.devices, "tensor_overrides": self.tensor_overrides, "cpu_moe": self.cpu_moe,
                "n_cpu_moe": self.n_cpu_moe, "tensor_split": self.tensor_split, "main_gpu": self.main_gpu,
                "split_mode": SPLIT_MODES[self.split_mode]}


def _flag(value: str) -> bool:
    if value.lower() in ("1", "true", "yes", "on", "enabled"):
        return True
    if value.lower() in ("0", "false", "no", "off", "disabled"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def _auto_flag(value: str) -> bool | None:
    return None if value.lower() == "auto" else _flag(value)


def _names(value: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in value.split(",") if name.strip())


def _checked(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse type from a parser that raises ValueError, keeping its message."""

    def checked(value: str) -> Any:
        try:
            return parse(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return checked


def _lora_paths(value: str) -> list[tuple[str, float]]:
    return [(path, 1.0) for path in _names(value)]


def _scaled_loras(value: str) -> list[tuple[str, float]]:
    """llama-server's --lora-scaled: ``FNAME:SCALE[,FNAME:SCALE...]``."""
    pairs = []
    for item in _names(value):
        path, colon, scale = item.rpartition(":")
        try:
            pairs.append((path, float(scale)))
        except ValueError:
            colon = ""
        if not colon or not path:
            raise argparse.ArgumentTypeError(f"{item!r} is not FNAME:SCALE")
    return pairs


@dataclasses.dataclass(frozen=True)
class Option:
    name: str  # the Settings field (or a pseudo-setting read by _settings)
    kind: Callable[[str], Any]
    help: str
    spellings: tuple[str, ...] = ()  # llama-server's, besides --name and --name-with-dashes
    switch: bool = False  # may be given without a value (llama-server's --embedding)
    negation: tuple[str, ...] | str = ()  # llama-server's --no-... spellings, for switches
    into: str = ""  # given more than once, each adds to this setting (llama-server's -ot, --lora)


OPTIONS = [
    Option("model", str, "path of the GGUF model", ("-m",)),
    Option("model_alias", _names, "name(s) the API shows for the model, comma-separated (default: the file name)",
           ("-a", "--alias")),
    Option("tags", _names, "comma-separated tags listed with the model in /v1/models", ("--tags",)),
    Option("host", _names, "address(es) to listen on, comma-separated (default 127.0.0.1)"),
    Option("port", int, "port (default 8000)"),
    Option("n_ctx", int, "context size shared by all slots (default 4096; 0: the model's)", ("-c", "--ctx-size")),
    Option("n_gpu_layers", int, "layers to offload to the GPU (-1: all)", ("-ngl", "--gpu-layers")),
    Option("devices", _checked(parse_devices), "devices to offload to, comma-separated, or none (--list-devices "
           "shows them)", ("-dev", "--device")),
    Option("list_devices", _flag, "print the devices -dev can name, and exit", switch=True),
    Option("tensor_overrides", _checked(parse_overrides), "keep tensors whose names match PATTERN in buffer type "
           "BUFTYPE: PATTERN=BUFTYPE,... (e.g. 'exps=CPU'; the first match wins)", ("-ot", "--override-tensor"),
           into="tensor_overrides"),
    Option("cpu_moe", _flag, "keep the Mixture-of-Experts weights of every layer on the CPU", ("-cmoe",),
           switch=True),
    Option("n_cpu_moe", int, "keep the Mixture-of-Experts weights of the first N layers on the CPU", ("-ncmoe",)),
    Option("tensor_split", _checked(parse_split), "share of the model for each GPU, e.g. 3,1", ("-ts",)),
    Option("main_gpu", int, "the GPU for the whole model with --split-mode none (default 0)", ("-mg",)),
    Option("split_mode", str, "how to spread the model over GPUs: none, layer (default), row or tensor", ("-sm",)),
    Option("lora", _lora_paths, "LoRA adapter(s), comma-separated, at scale 1 (ids 0, 1, ... in the order given)",
           into="loras"),
    Option("lora_scaled", _scaled_loras, "LoRA adapter(s) at a scale: FNAME:SCALE,...", into="loras"),
    Option("lora_init_without_apply", _flag, "load the LoRA adapters at scale 0 (apply them with POST "
           "/lora-adapters or a request's lora)", switch=True),
    Option("n_threads", int, "threads for generation", ("-t", "--threads")),
    Option("n_threads_batch", int, "threads for prompt processing", ("-tb", "--threads-batch")),
    Option("n_batch", int, "tokens per decode step (default 512)", ("-b", "--batch-size")),
    Option("n_ubatch", int, "physical batch size (default 512)", ("-ub", "--ubatch-size")),
    Option("n_parallel", int, "requests generated at once (default 4)", ("-np", "--parallel")),
    Option("max_queue", int, "requests that may wait before the server answers 503 (default 64)"),
    Option("chat_format", str, "named chat format or jinja template (default: the model's own)",
           ("--chat-template",)),
    Option("chat_template_file", str, "a jinja chat template in a file", ("--chat-template-file",)),
    Option("jinja", _flag, "render chat templates with jinja (default true); --no-jinja: llama.cpp's built-in "
                           "template handling, as llama-server's: the template (the model's, or --chat-template) is "
                           "recognized as one of its built-in formats, and requests with tools are refused",
           switch=True, negation="--no-jinja"),
    Option("embedding", _flag, "also serve /v1/embeddings", ("--embeddings",), switch=True),
    Option("reranking", _flag, "serve /rerank with a reranker model", ("--rerank",), switch=True),
    Option("pooling", str, "embedding pooling: none, mean, cls, last or rank (default: the model's)"),
    Option("use_mlock", _flag, "lock the model in memory", ("--mlock",), switch=True),
    Option("use_mmap", _flag, "memory-map the model (default true)", ("--mmap",), switch=True, negation="--no-mmap"),
    Option("flash_attn", _auto_flag, "flash attention: on, off or auto (default auto)", ("-fa",)),
    Option("cache_type_k", str, "KV cache type for K (f16, q8_0, q4_0, ...)", ("-ctk",)),
    Option("cache_type_v", str, "KV cache type for V (needs flash attention when quantized)", ("-ctv",)),
    Option("kv_unified", _flag, "one KV cache shared by the slots, so one request may use all of it; off: "
                                "each slot gets n_ctx / n_parallel (default, as llama-server's: on unless "
                                "-np is given)", ("-kvu",), switch=True,
           negation="--no-kv-unified"),
    Option("swa_full", _flag, "full-size KV cache for sliding-window attention", switch=True),
    Option("context_shift", _flag, "when a reply reaches the end of the context, drop the older half and go on",
           switch=True, negation="--no-context-shift"),
    Option("temperature", float, "default temperature for requests that do not set one", ("--temp",)),
    Option("seed", int, "default seed for requests that do not set one", ("-s",)),
    Option("n_predict", int, "default token limit for requests that do not set one", ("-n", "--predict")),
    Option("cors_origins", _names, "origins allowed to call the API from a browser, comma-separated (* for any)"),
    Option("slots", _flag, "serve /slots (default true)", switch=True, negation="--no-slots"),
    Option("thinking", str, "let models that can think do so: on, off or auto (default auto: as the template "
                            "decides)", ("-rea", "--reasoning")),
    Option("metrics", _flag, "serve Prometheus /metrics (default false)", switch=True),
    Option("stop_timeout", float, "seconds the running requests get to finish after SIGTERM or Ctrl-C, while "
                                  "/health and new requests answer 503 (default 10, as llama-server's)"),
    Option("slot_save_path", str, "folder for /slots save and restore (off without it)"),
    Option("cache_ram_mib", int, "MiB of RAM that keep prompt states of slots reused for other prompts",
           ("--cache-ram", "-cram")),
    Option("cache_idle_slots", _flag, "with --cache-ram: when a request starts, keep the other idle slots' prompts "
                                      "in that cache and free their KV for it (default true, as llama-server's)",
           switch=True, negation="--no-cache-idle-slots"),
    Option("model_draft", str, "draft model for speculative decoding", ("-md", "--spec-draft-model")),
    Option("spec_type", str, "speculative decoding: ngram (prompt lookup, also llama.cpp's ngram-*), draft-simple "
                             "(with --model-draft, the default then) or none"),
    Option("draft_max", int, "most tokens to draft at a time (default 16)", ("--spec-draft-n-max", "--draft-max")),
    Option("draft_min", int, "fewest tokens worth drafting (default 0)", ("--spec-draft-n-min", "--draft-min")),
    Option("api_key", _names, "require this key, or one of these comma-separated keys (Authorization: Bearer KEY)"),
    Option("api_keys_file", str, "require one of the keys in this file, one per line", ("--api-key-file",)),
    Option("ssl_keyfile", str, "TLS key file", ("--ssl-key-file",)),
    Option("ssl_certfile", str, "TLS certificate file", ("--ssl-cert-file",)),
    Option("verbose", _flag, "log every request and llama.cpp's own log", ("-v",), switch=True),
    Option("webui", _flag, "serve the chat page at / (default true)", ("--ui",), switch=True,
           negation=("--no-webui", "--no-ui")),
    Option("mmproj", str, "multimodal projector GGUF for the model: images (and audio) in chat messages",
           ("-mm",)),
    Option("allow_remote_media", _flag, "let chat requests name http(s) image URLs that the server downloads "
           "(default off: images come as data URLs)", switch=True),
    Option("media_max_bytes", int, "largest image or audio a request may send, in bytes (default 20 MiB)"),
    Option("media_path", str, "folder chat requests may read images from, as file://NAME (a path inside it; no "
                              "..) (default: none, file:// URLs are refused)"),
    Option("config", str, "JSON file serving several models: {\"models\": [{\"model\": ..., "
                          "\"model_alias\": ...}, ...]} plus any server option at the top level"),
    Option("models_dir", str, "folder of GGUF models loaded on demand (llama-server's router mode): FILE.gguf is "
                              "model FILE; a subfolder is one model (its mmproj*.gguf the projector)"),
    Option("models_preset", str, "INI file of models loaded on demand (llama-server's format): a [name] section "
                                 "per model with model = PATH and any flag without its dashes, [*] for all"),
    Option("models_max", int, "most models loaded at once; a new one unloads the least recently used idle one "
                              "(default 4, 0: no limit)"),
    Option("models_memory_mib", int, "most MiB of model files loaded at once, as --models-max (default 0: no "
                                     "limit)"),
    Option("models_autoload", _flag, "load a model when a request names it (default true; off: POST /models/load "
                                     "first, or ?autoload=true)", switch=True, negation="--no-models-autoload"),
    Option("sleep_idle_seconds", float, "unload a model after this many seconds without requests; the next request "
                                        "loads it again (default -1: never)"),
    Option("backend_sampling", _flag, "accepted for llama-server's commands; pyllama samples on the CPU, which "
                                      "gives the same tokens", ("-bs",), switch=True),
]
KV_CACHE_TYPES = {"F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "IQ4_NL", "Q5_0", "Q5_1"}  # llama.cpp's -ctk/-ctv
SERVER_WIDE = {"host", "port", "api_key", "api_keys_file", "ssl_keyfile", "ssl_certfile", "max_queue",
               "cors_origins", "verbose", "webui", "slots", "metrics", "stop_timeout", "models_max",
               "models_memory_mib", "models_autoload", "router"}
DECLARING = ("config", "models_dir", "models_preset")  # flags that declare the models instead of --model


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line: the usage of ~50 flags would bury it
        if not self.exit_on_error:  # re-reading the models of a running server: its caller answers
            raise ValueError(message)
        self.exit(2, f"{self.prog}: error: {message} (--help lists the flags)\n")


def _spellings(option: Option) -> list[str]:
    names = [f"--{option.name}"] + ([f"--{option.name.replace('_', '-')}"] if "_" in option.name else [])
    return names + [s for s in option.spellings if s not in names]


_SPELLINGS = {spelling for option in OPTIONS for spelling in _spellings(option)}


def _parser(prog: str, exit_on_error: bool = True) -> argparse.ArgumentParser:
    parser = _Parser(prog=prog, exit_on_error=exit_on_error,
                                     description="OpenAI-compatible server for GGUF models (llama-server's and "
                                                 "llama-cpp-python's flags both work)")
    for option in OPTIONS:
        names = _spellings(option)
        extra = {"nargs": "?", "const": True} if option.switch else {}
        if option.into:
            extra = {"action": "append"}
        parser.add_argument(*names, dest=option.into or option.name, type=option.kind, default=None,
                            help=f"{option.help} [env {option.name.upper()}]", **extra)
        if option.negation:
            negations = (option.negation,) if isinstance(option.negation, str) else option.negation
            parser.add_argument(*negations, dest=option.name, action="store_const", const=False,
                                help=f"turn {names[0]} off")
    return parser


def _values(parser: argparse.ArgumentParser, args: argparse.Namespace,
            environ: Mapping[str, str]) -> dict[str, Any]:
    """The settings given by parsed flags, falling back to ``environ``'s variables."""
    values: dict[str, Any] = {}
    for index, option in enumerate(OPTIONS):
        value = getattr(args, option.into or option.name)
        if option.into and any(other.into == option.into for other in OPTIONS[:index]):
            value = None  # flags adding to one setting: their values were all taken with the first
        if value is None and option.name.upper() in environ:
            try:
                value = option.kind(environ[option.name.upper()])
            except (ValueError, argparse.ArgumentTypeError) as exc:
                parser.error(f"environment variable {option.name.upper()}: {exc}")
            value = [value] if option.into and value is not None else value
        if value is not None and option.into:
            values[option.into] = values.get(option.into, []) + [item for given in value for item in given]
        elif value is not None:
            values[option.name] = value
    values.pop("backend_sampling", None)  # accepted only (see its help)
    return values


def parse(argv: Sequence[str] | None = None, prog: str = "python -m pyllama.server",
          exit_on_error: bool = True) -> Settings | list[Settings]:
    """Settings from flags and environment; with ``--config``, ``--models-dir`` or ``--models-preset``,
    one Settings per model. ``prog`` names the command in errors; without ``exit_on_error`` an error
    raises ValueError instead of exiting."""
    parser = _parser(prog, exit_on_error)
    values = _values(parser, parser.parse_args(argv), os.environ)
    if values.pop("list_devices", False):
        print(_device_list(), end="")
        parser.exit(0)
    declared = {name: values.pop(name) for name in DECLARING if name in values}
    if not declared:
        if "model" not in values:
            values["model"] = _demo_model(parser)
        return _settings(parser, values)
    values.pop("model", None)  # the declared models replace --model
    server = {k: v for k, v in values.items() if k in SERVER_WIDE}
    shared = {k: v for k, v in values.items() if k not in SERVER_WIDE}
    entries: list[dict[str, Any]] = []
    if "config" in declared:
        top, listed = _read_config(parser, declared["config"])
        entries += [{**shared, **entry, **top, **server} for entry in listed]
    if "models_dir" in declared or "models_preset" in declared:
        found = _scan_models_dir(parser, declared["models_dir"]) if "models_dir" in declared else {}
        every, sections = _read_preset(parser, declared["models_preset"]) if "models_preset" in declared else ({}, {})
        cache = cached_entries()
        dedup = every.get("dedup_cache_models", False)
        hiding = {path for section in sections.values() if section.get("dedup_cache_models", dedup)
                  for path in (section.get("model"), section.get("model_draft")) if path}
        for name in {**cache, **found, **sections}:
            source = "preset" if name in sections else "models_dir" if name in found else "cache"
            entry = {"load_on_startup": False, **every, **cache.get(name, {}), **found.get(name, {}),
                     **sections.get(name, {}), **shared, **server, "model_alias": (name,), "router": True,
                     "source": source, "reread": functools.partial(_reread, argv, prog)}
            entry.pop("dedup_cache_models", None)
            if "model" not in entry:
                parser.error(f"the model '{name}' in {declared['models_preset']} names no file: add model = PATH")
            entry["hidden"] = source == "cache" and entry["model"] in hiding
            entries.append(entry)
    if not entries:
        parser.error(f"no models found in {' or '.join(declared.values())}")
    models = [_settings(parser, entry) for entry in entries]
    names = [name for m in models for name in (m.model_alias, *m.aliases)]
    if len(set(names)) != len(names):
        parser.error(f"model aliases must differ: {names}")
    return models


def _reread(argv: Sequence[str] | None, prog: str) -> list[Settings]:
    """The models the same flags declare now that their files may have changed (GET /models?reload=1)."""
    try:
        models = parse(argv, prog, exit_on_error=False)
    except argparse.ArgumentError as exc:  # a preset value of the wrong type
        raise ValueError(str(exc)) from None
    return models if isinstance(models, list) else [models]


def _read_config(parser: argparse.ArgumentParser, config: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``--config``'s JSON: the options for every model, and each model's own."""
    try:
        loaded = json.loads(Path(config).read_text())
        entries = loaded.pop("models")
    except (OSError, ValueError, KeyError, AttributeError) as exc:
        parser.error(f"cannot read the config file {config}: {exc}")
    known = {option.into or option.name for option in OPTIONS} - {"config", "list_devices", *DECLARING}
    unknown = (set(loaded) | {k for e in entries for k in e}) - known
    if unknown:
        parser.error(f"unknown settings in {config}: {', '.join(sorted(unknown))}")
    return loaded, entries


def _scan_models_dir(parser: argparse.ArgumentParser, folder: str) -> dict[str, dict[str, Any]]:
    try:
        return models_dir(folder)
    except ValueError as exc:
        parser.error(str(exc))


PRESET_ONLY = {"load-on-startup", "stop-timeout", "dedup-cache-models"}  # llama-server's keys that are no flags
# llama-server's Hugging Face model keys: the model (or draft model) is the cached file they name
# (server/hf_cache.py; POST /models downloads one); one not in the cache is listed by its repository,
# and loading it fails with the file not found
HF_REPO, HF_FILE = {"hf-repo", "hf", "hfr", "LLAMA_ARG_HF_REPO"}, {"hf-file", "hff", "LLAMA_ARG_HF_FILE"}
HF_DRAFT = {"spec-draft-hf", "hfd", "hf-repo-draft", "LLAMA_ARG_SPEC_DRAFT_HF_REPO", "LLAMA_ARG_HFD_REPO"}


def _read_preset(parser: argparse.ArgumentParser, path: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """llama-server's --models-preset INI: the ``[*]`` section's settings, and each model's. Keys
    are flags without their dashes (``n-gpu-layers``, ``c``) or llama-server's environment
    names (``LLAMA_ARG_N_GPU_LAYERS``)."""
    try:
        sections = preset_sections(path)
    except ValueError as exc:
        parser.error(str(exc))
    settings = {name: _preset_values(parser, path, name, pairs) for name, pairs in sections.items() if name}
    return settings.pop("*", {}), settings


def _preset_values(parser: argparse.ArgumentParser, path: str, section: str,
                   pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """One preset section's key = value lines, read as the flags they name."""
    negations = {n for option in OPTIONS if option.negation
                 for n in ((option.negation,) if isinstance(option.negation, str) else option.negation)}
    argv: list[str] = []
    extra: dict[str, Any] = {}
    hf = {key: value for key, value in pairs if key in HF_REPO | HF_FILE | HF_DRAFT}
    try:  # model = PATH wins over them
        repository = cached_repositories(*(next((v for k, v in hf.items() if k in keys), None)
                                           for keys in (HF_REPO, HF_FILE, HF_DRAFT)))
    except ValueError as exc:
        parser.error(f"{path}: [{section}] {exc}")
    for key, value in pairs:
        if key in hf:
            continue
        if key in PRESET_ONLY:
            if key != "stop-timeout":  # unloading waits for running requests
                extra[key.replace("-", "_")] = _flag(value)
            continue
        flag = f"--{key[len('LLAMA_ARG_'):].lower().replace('_', '-')}" if key.startswith("LLAMA_ARG_") else key
        flag = flag if flag.startswith("-") else f"-{flag}" if f"-{flag}" in _SPELLINGS else f"--{flag}"
        if flag not in _SPELLINGS and flag not in negations:
            parser.error(f"{path}: [{section}] {key} is not an option of this server")
        if flag in negations:
            argv += [flag] if _flag(value) else []
        else:
            argv += [flag, value]
    return {**repository, **_values(parser, parser.parse_args(argv), {}), **extra}


def _device_list() -> str:
    """``--list-devices``, as llama-server prints it."""
    from ..system import devices

    lines = [f"  {d.name}: {d.description} ({d.memory_total >> 20} MiB, {d.memory_free >> 20} MiB free)"
             for d in devices() if d.name in offload_devices()]
    return "\n".join(["Available devices:", *(lines or ["  (none)"])]) + "\n"


def _demo_model(parser: argparse.ArgumentParser) -> str:
    """No --model or MODEL: the demo model when installed, else one line saying how to get a model."""
    from .. import demo

    try:
        return demo.default_model()
    except NoModelError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    except (OSError, ValueError) as exc:  # a full disk or a corrupt chunk while assembling it
        parser.exit(1, f"{parser.prog}: error: cannot assemble the demo model: {exc}\n")


def _settings(parser: argparse.ArgumentParser, values: dict) -> Settings:
    values = dict(values)
    if "model" not in values:
        parser.error("a model is required: --model PATH or MODEL=PATH")
    if not values.get("router") and not Path(values["model"]).is_file():  # a router's answers its request
        parser.error(f"model file not found: {values['model']}")
    if values.get("mmproj") and not Path(values["mmproj"]).is_file():
        parser.error(f"projector file not found: {values['mmproj']}")
    for name in ("model_alias", "host", "tags", "cors_origins"):  # names from a config file may be plain strings
        if isinstance(values.get(name), str):
            values[name] = _names(values[name])
    if "model_alias" in values:
        first, *others = values.pop("model_alias") or ("",)
        values["model_alias"], values["aliases"] = first, tuple(others)
    if "host" in values:
        values["hosts"] = tuple(values.pop("host")) or ("127.0.0.1",)
    for name in ("tags", "cors_origins"):
        if name in values:
            values[name] = tuple(values[name])
    given = values.pop("api_key", ())
    keys = set(_names(given) if isinstance(given, str) else given)
    if "api_keys_file" in values:
        path = values.pop("api_keys_file")
        try:
            keys |= {line.strip() for line in Path(path).read_text().splitlines() if line.strip()}
        except OSError as exc:
            parser.error(f"cannot read the API keys file: {exc}")
    if "chat_template_file" in values:
        path = values.pop("chat_template_file")
        try:
            values["chat_format"] = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            parser.error(f"cannot read the chat template file: {exc}")
    for name in ("cache_type_k", "cache_type_v"):
        if values.get(name) is not None and values[name].upper() not in KV_CACHE_TYPES:
            parser.error(f"--{name.replace('_', '-')} must be one of {', '.join(sorted(KV_CACHE_TYPES)).lower()}")
    if values.get("thinking", "auto") not in ("on", "off", "auto"):
        parser.error(f"--reasoning must be on, off or auto, not {values['thinking']!r}")
    if values.get("pooling") not in (None, "none", "mean", "cls", "last", "rank"):
        parser.error(f"--pooling must be none, mean, cls, last or rank, not {values['pooling']!r}")
    kind = values.get("spec_type")  # llama.cpp's names: ngram-* guess from the text, draft-* with a draft model
    if kind is not None and kind != "none" and not kind.startswith(("ngram", "draft")):
        parser.error(f"--spec-type must be none, ngram (ngram-simple, ...) or draft-simple, not {kind!r}")
    if kind is not None and kind.startswith("draft") and not values.get("model_draft"):
        parser.error(f"--spec-type {kind} needs a draft model (--model-draft PATH)")
    if values.get("model_draft") and not Path(values["model_draft"]).is_file():
        parser.error(f"draft model file not found: {values['model_draft']}")
    _check_placement(parser, values)
    if "kv_unified" not in values:  # llama-server's rule: slots share the cache unless their number is given
        values["kv_unified"] = "n_parallel" not in values
    if values.get("stop_timeout", 0) < 0:
        parser.error(f"--stop-timeout is {values['stop_timeout']:g}; it must be 0 or more seconds")
    if values.get("media_path") and not Path(values["media_path"]).is_dir():
        parser.error(f"--media-path {values['media_path']} is not a folder")
    if values.get("jinja") is False and values.get("chat_format") is not None:
        _check_builtin_template(parser, values["chat_format"])
    if values.get("slot_save_path") and not Path(values["slot_save_path"]).is_dir():
        parser.error(f"--slot-save-path {values['slot_save_path']} is not a folder")
    return Settings(**values, api_keys=frozenset(keys))


def _check_builtin_template(parser: argparse.ArgumentParser, template: str) -> None:
    """--no-jinja with --chat-template: llama-server refuses to start with a template its built-in
    handling does not recognize; so does this server."""
    from ..chat.builtin import builtin_supports

    if not builtin_supports(template):
        shown = template if len(template) < 80 else template[:77] + "..."
        parser.error(f"the chat template {shown!r} is not one llama.cpp's built-in handling knows (--no-jinja only "
                     "takes commonly used templates; drop --no-jinja to render it with jinja)")


def _check_placement(parser: argparse.ArgumentParser, values: dict[str, Any]) -> None:
    """Devices, tensor overrides, split and LoRA files: each a one-line error when wrong, before
    anything loads. Values from a config file may be text (as on the command line) or JSON."""
    try:
        for name, parse in (("tensor_overrides", parse_overrides), ("devices", parse_devices),
                            ("tensor_split", parse_split)):
            if isinstance(values.get(name), str):
                values[name] = parse(values[name])
        values["tensor_overrides"] = tuple(check_overrides(values.get("tensor_overrides", ())))
        if values.get("devices") is not None:
            values["devices"] = tuple(check_devices(values["devices"]))
        moe_overrides(values.get("cpu_moe", False), values.get("n_cpu_moe", 0))
        parse_split_mode(values.get("split_mode", "layer"))
        if values.get("tensor_split") is not None:
            values["tensor_split"] = tuple(check_split(values["tensor_split"]))
    except (ValueError, TypeError) as exc:  # TypeError: a config file's value of the wrong JSON type
        parser.error(str(exc))
    try:
        values["loras"] = tuple((str(path), float(scale)) for path, scale in values.get("loras", ()))
    except (ValueError, TypeError):
        parser.error(f"loras must be a list of [path, scale] pairs, not {values['loras']!r}")
    for path, _ in values["loras"]:
        if not Path(path).is_file():
            parser.error(f"LoRA adapter file not found: {path}")
