"""The routes that do not make sense across replicas, and what the Ray endpoint answers instead.

Each replica is a whole pyllama server; a request reaches one of them. Reading or changing one
replica's own state through the shared endpoint would answer about, or change, whichever
replica the request happened to reach: those routes answer 501 here, naming what to do instead.
Every other route is the same on every replica (the same model, flags and templates) and is
forwarded.
"""

from __future__ import annotations

import re

_PER_REPLICA = (
    ("GET", re.compile(r"/slots"), "the slots of one replica"),
    ("POST", re.compile(r"/slots/[^/]+"), "saving, restoring or erasing a slot of one replica"),
    ("POST", re.compile(r"/lora-adapters"), "changing the default LoRA scales of one replica "
                                            "(give a request its own 'lora' instead)"),
    ("POST", re.compile(r"/models/(load|unload)"), "loading or unloading a model on one replica "
                                                   "(replicas load models on demand)"),
    ("POST", re.compile(r"/models"), "downloading a model to one replica's node (download it on every node)"),
    ("DELETE", re.compile(r"/models"), "deleting a model from one replica's node"),
    ("GET", re.compile(r"/models/sse"), "one replica's model events"),
    ("GET", re.compile(r"/v1/stream"), "reattaching to a stream one replica keeps"),
    ("DELETE", re.compile(r"/v1/stream"), "stopping a stream one replica keeps"),
    ("POST", re.compile(r"/v1/streams/lookup"), "looking up the streams one replica keeps"),
    ("GET", re.compile(r"/metrics"), "one replica's metrics (use Ray's metrics, which cover every replica)"),
)


def refusal(method: str, path: str) -> str | None:
    """Why ``method path`` is not served through the Ray endpoint, or None if it is."""
    for verb, pattern, what in _PER_REPLICA:
        if method == verb and pattern.fullmatch(path):
            return (f"{method} {path} is not served through the Ray endpoint: it would be {what}, and "
                    "this endpoint spreads requests over several replicas (a single `pyllama serve` answers it)")
    return None
