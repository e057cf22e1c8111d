"""The two Ray Serve deployments: replicas, each a whole pyllama server in-process, and the
ingress that forwards each HTTP request to one of them.

The ingress reads the body, refuses the routes that do not cross replicas (pyllama/ray/routes.py),
and calls a replica through a streaming deployment handle with the request's routing key first,
where the replica deployment's request router (pyllama/ray/router.py) reads it. The replica runs
the request through pyllama's own app (pyllama/server/app.py) and streams back its ASGI messages,
which the ingress sends on as they come (pyllama/ray/relay.py). A replica that dies before
answering costs a retry on another; one that dies mid-reply ends the reply with an error in its
API's shape.
"""

# no ``from __future__ import annotations``: Ray's class-based FastAPI views read the route's
# annotations as objects (a string 'Request' becomes a query parameter)
from collections.abc import AsyncIterator
from typing import Any

import ray
from fastapi import FastAPI, Request
from ray import serve
from ray.serve.handle import DeploymentHandle, DeploymentResponseGenerator
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from ..server.app import create_app
from ..server.errors import error_response
from ..server.settings import Settings, parse
from .asgi_call import Message, call
from .prompt_keys import PromptKeys
from .relay import REPLICA_GONE, Relayed, first_line, plain_scope
from .routes import refusal

REPLICA_HEADER = b"x-pyllama-replica"  # which replica answered (its Ray actor name)


@serve.deployment(name="PyllamaReplica")
class Replica:
    async def __init__(self, flags: list[str]) -> None:
        """``flags``: ``pyllama serve``'s (llama-server's) flags. Without ``-t``, the model runs on
        as many threads as the replica has CPUs from Ray, not on every core of its node."""
        parsed = parse(flags, "pyllama.ray")
        cpus = int(ray.get_runtime_context().get_assigned_resources().get("CPU", 0))
        for settings in parsed if isinstance(parsed, list) else [parsed]:
            if settings.n_threads is None and cpus > 0:
                settings.n_threads = cpus
        self.app = create_app(parsed)
        await self.app.router.lifespan_context(self.app).__aenter__()  # the pool's idle watch; closed in __del__
        self.name = (ray.get_runtime_context().get_actor_name() or "").encode()

    async def respond(self, key: str, scope: dict[str, Any], body: bytes) -> AsyncIterator[Message]:
        """The ASGI messages of one request's response. ``key`` is for the request router only."""
        async for message in call(self.app, scope, body):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (REPLICA_HEADER, self.name)]}
            yield message

    def check_health(self) -> None:
        """Ray replaces a replica whose engine thread stopped (engine.py: it then refuses every job)."""
        stopped = [engine for engine in self.app.state.pool.engines() if not engine.alive]
        if stopped:
            raise RuntimeError(f"{len(stopped)} engine(s) of this replica stopped: {stopped[0].failure}")

    def __del__(self) -> None:
        """Ray calls it when it stops the replica: the models' memory goes at once (a later call finds none)."""
        if hasattr(self, "app"):
            self.app.state.pool.close()


ingress = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)  # the replicas' app has /docs


@serve.deployment(name="PyllamaIngress", ray_actor_options={"num_cpus": 0}, max_ongoing_requests=1000)
@serve.ingress(ingress)
class Ingress:
    def __init__(self, replicas: DeploymentHandle, flags: list[str]) -> None:
        self.replicas = replicas.options(method_name="respond", stream=True)
        parsed = parse(flags, "pyllama.ray")
        self.keys = PromptKeys(None if isinstance(parsed, list) else parsed)

    @ingress.api_route("/{path:path}", methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
                       include_in_schema=False)
    async def forward(self, request: Request) -> Response:
        path = request.url.path
        refused = refusal(request.method, path)
        if refused is not None:
            return error_response(501, refused, code="not_supported", path=path)
        body = await request.body()
        key, scope = await run_in_threadpool(self.keys.key, path, body), plain_scope(request.scope, path)
        for _ in range(2):  # a replica that died before answering: once more (nothing was sent)
            stream: DeploymentResponseGenerator = self.replicas.remote(key, scope, body)
            try:
                return Relayed(await stream.__anext__(), stream, path)
            except REPLICA_GONE as exc:
                stream.cancel()
                gone = exc
        return error_response(503, f"the replicas serving this request stopped before answering: {first_line(gone)}",
                              code="replica_unavailable", path=path)

    def __del__(self) -> None:
        if hasattr(self, "keys"):
            self.keys.close()


def settings_of(flags: list[str]) -> Settings:
    """The first model's settings from ``flags`` (checked here, once, before any replica starts)."""
    parsed = parse(flags, "pyllama.ray")
    return parsed[0] if isinstance(parsed, list) else parsed
