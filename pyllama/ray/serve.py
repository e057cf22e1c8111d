"""``pyllama serve --ray [ADDRESS] --replicas N [server flags]``: the server as N Ray Serve replicas.

Without ADDRESS, Ray's own choice: the cluster ``RAY_ADDRESS`` names, else a new one on this
machine, stopped on exit. The endpoint listens where ``--host``/``--port`` say (Ray's HTTP proxy).
Autoscaling and finer placement are Ray's deployment options: a ``serve run`` YAML (README).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence

APP_NAME = "pyllama"


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, add_help=False)
    parser.add_argument("--ray", nargs="?", const=None, metavar="ADDRESS",
                        help="the Ray cluster (auto, HOST:PORT, ray://HOST:PORT); none: RAY_ADDRESS or a new one")
    parser.add_argument("--replicas", type=int, default=1, help="replicas of the model (default 1)")
    parser.add_argument("--replica-cpus", type=float, default=None, help="CPUs Ray gives each replica (default 1)")
    parser.add_argument("--replica-gpus", type=float, default=None, help="GPUs Ray gives each replica (default 0)")
    parser.add_argument("--routing", choices=("prefix", "power_of_two"), default="prefix",
                        help="prefix (default): the replica most likely to hold the prompt's prefix; "
                             "power_of_two: Ray's default, by load alone")
    return parser


def main(argv: Sequence[str], prog: str = "pyllama serve") -> int:
    options, flags = _parser(prog).parse_known_args(argv)
    if options.replicas < 1:
        print(f"{prog}: error: --replicas must be at least 1, got {options.replicas}", file=sys.stderr)
        return 2
    import ray
    from ray import serve

    from .app import application
    from .deployment import settings_of

    settings = settings_of(flags)  # bad flags: one line, before Ray starts
    resources = {name: value for name, value in (("num_cpus", options.replica_cpus),
                                                 ("num_gpus", options.replica_gpus)) if value is not None}
    replica_options = {"num_replicas": options.replicas, **({"ray_actor_options": resources} if resources else {})}
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop as Ctrl-C does: the app and a Ray we started go
    ray.init(address=options.ray, log_to_driver=settings.verbose)
    try:
        serve.start(http_options={"host": settings.host, "port": settings.port})
        serve.run(application(flags, options.routing, replica_options=replica_options), name=APP_NAME,
                  route_prefix="/")
        print(f"pyllama on Ray Serve at http://{settings.host}:{settings.port}: {options.replicas} replica(s) of "
              f"{settings.model_alias}, {options.routing} routing", flush=True)
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C would leave the app or our Ray running
        serve.delete(APP_NAME)
        ray.shutdown()
    return 0
