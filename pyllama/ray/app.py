"""The Ray Serve application: ``serve run pyllama.ray:build_app flags="--model m.gguf"``, a
``serve run`` YAML config (README), or ``pyllama serve --ray`` (pyllama/ray/serve.py).

Replica resources, replica counts and autoscaling are Ray's own deployment options, set in the
YAML's ``deployments:`` entry named ``PyllamaReplica`` (``ray_actor_options``, ``num_replicas``,
``autoscaling_config``) or given here by the command; the model's placement (``-ngl``) is a flag.
"""

from __future__ import annotations

import shlex
from typing import Any, Literal

from pydantic import BaseModel, Field
from ray.serve import Application
from ray.serve.config import RequestRouterConfig

from .deployment import Ingress, Replica, settings_of
from .routing import PrefixAffinity


class AppArgs(BaseModel):
    """``build_app``'s arguments (the YAML's ``args:``)."""

    flags: str | list[str] = Field(description="pyllama serve's flags for each replica: '--model m.gguf -c 4096'")
    routing: Literal["prefix", "power_of_two"] = Field(
        "prefix", description="prefix: to the replica most likely to hold the prompt's prefix; "
                              "power_of_two: Ray's default, by load alone")
    router: dict[str, Any] = Field(default_factory=dict, description="PrefixAffinity's options "
                                   "(block_chars, capacity_blocks, imbalance, min_match)")


def build_app(args: dict[str, Any]) -> Application:
    """The app builder ``serve run`` imports."""
    parsed = AppArgs.model_validate(args)
    flags = shlex.split(parsed.flags) if isinstance(parsed.flags, str) else list(parsed.flags)
    return application(flags, parsed.routing, parsed.router)


def application(flags: list[str], routing: str = "prefix", router: dict[str, Any] | None = None,
                replica_options: dict[str, Any] | None = None) -> Application:
    """The ingress over replicas of the server ``flags`` describe. ``replica_options``: Ray's
    deployment options for the replicas (``num_replicas``, ``ray_actor_options``, ...)."""
    settings = settings_of(flags)
    # a replica takes twice its slots: a short queue in its engine keeps a prefix's requests on the
    # replica that holds it; beyond that, requests wait in Ray, free to go to any replica
    options: dict[str, Any] = {"max_ongoing_requests": 2 * settings.n_parallel, **(replica_options or {})}
    if routing == "prefix":
        # past a gap of one replica's slots between queues, waiting costs more than a cached prefix saves
        router = {"imbalance": settings.n_parallel, **(router or {})}
        PrefixAffinity(**router)  # bad options fail here, not in each ingress
        options["request_router_config"] = RequestRouterConfig(
            request_router_class="pyllama.ray.router:PrefixAwareRouter", request_router_kwargs=router)
    return Ingress.bind(Replica.options(**options).bind(flags), flags)
