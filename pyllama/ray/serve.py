"""``pyllama serve --ray [ADDRESS] --replicas N [--max-replicas M] [server flags]``: the server as
Ray Serve replicas.

Without ADDRESS, Ray's own choice: the cluster ``RAY_ADDRESS`` names, else a new one on this
machine, stopped on exit. The endpoint listens where ``--host``/``--port`` say (Ray's HTTP proxy).
``--max-replicas`` lets Ray's autoscaler add replicas while requests queue; finer placement and
autoscaling options are Ray's own deployment options, in a ``serve run`` YAML (README).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

APP_NAME = "pyllama"


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"{prog} --ray", add_help=False, usage=f"{prog} --ray [ADDRESS] "
                                     "[--replicas N] [--max-replicas M] [...] SERVER_FLAGS",
                                     description="The server as replicas on Ray Serve, behind one endpoint.")
    parser.add_argument("--ray", nargs="?", const=None, metavar="ADDRESS",
                        help="the Ray cluster (auto, HOST:PORT, ray://HOST:PORT); none: RAY_ADDRESS or a new one")
    parser.add_argument("--replicas", type=int, default=1, help="replicas of the model (default 1)")
    parser.add_argument("--max-replicas", type=int, default=None,
                        help="let Ray's autoscaler run up to this many replicas, adding one while each replica has "
                             "more requests than slots (-np) and removing idle ones down to --replicas")
    parser.add_argument("--replica-cpus", type=float, default=None, help="CPUs Ray gives each replica (default 1)")
    parser.add_argument("--replica-gpus", type=float, default=None, help="GPUs Ray gives each replica (default 0)")
    parser.add_argument("--routing", choices=("prefix", "power_of_two"), default="prefix",
                        help="prefix (default): the replica most likely to hold the prompt's prefix; "
                             "power_of_two: Ray's default, by load alone")
    return parser


def deployment_options(options: argparse.Namespace, n_parallel: int) -> dict[str, Any]:
    """Ray's options for the replica deployment, from the command's."""
    resources = {name: value for name, value in (("num_cpus", options.replica_cpus),
                                                 ("num_gpus", options.replica_gpus)) if value is not None}
    replica_options: dict[str, Any] = {"ray_actor_options": resources} if resources else {}
    if options.max_replicas is None:
        replica_options["num_replicas"] = options.replicas
    else:  # Ray's queue-depth autoscaling: a replica's target is its slots' worth of requests
        replica_options["autoscaling_config"] = {"min_replicas": options.replicas, "max_replicas": options.max_replicas,
                                                 "target_ongoing_requests": n_parallel}
    return replica_options


def main(argv: Sequence[str], prog: str = "pyllama serve") -> int:
    parser = _parser(prog)
    options, flags = parser.parse_known_args(argv)
    if "-h" in flags or "--help" in flags:
        print(parser.format_help() + "\nSERVER_FLAGS, for every replica (the server's):\n", flush=True)
        from ..server.settings import parse

        parse(["--help"], f"{prog} --ray")  # prints them and exits
    if options.replicas < 1 or (options.max_replicas is not None and options.max_replicas < options.replicas):
        print(f"{prog}: error: expected 1 <= --replicas <= --max-replicas, got {options.replicas} and "
              f"{options.max_replicas}", file=sys.stderr)
        return 2
    import ray
    from ray import serve

    from .app import application
    from .deployment import settings_of

    settings = settings_of(flags)  # bad flags: one line, before Ray starts
    replica_options = deployment_options(options, settings.n_parallel)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop as Ctrl-C does: the app and a Ray we started go
    ray.init(address=options.ray, log_to_driver=settings.verbose)
    try:
        serve.start(http_options={"host": settings.host, "port": settings.port})
        serve.run(application(flags, options.routing, replica_options=replica_options), name=APP_NAME,
                  route_prefix="/")
        count = options.replicas if options.max_replicas is None else f"{options.replicas}-{options.max_replicas}"
        print(f"pyllama on Ray Serve at http://{settings.host}:{settings.port}: {count} replica(s) of "
              f"{settings.model_alias}, {options.routing} routing", flush=True)
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C would leave the app or our Ray running
        serve.delete(APP_NAME)
        ray.shutdown()
    return 0
