"""pyllama on Ray Serve: prompt-cache reuse by routing, time to first token, and the Ray path's overhead.

    python bench/ray_serve.py [--model tiny-f32] [--conversations 8] [--turns 5] [--max-tokens 16]

One local Ray cluster: a head and two simulated one-CPU nodes. The workload is tests/conversations.py's:
K conversations sharing a system prompt, growing turn by turn, each turn's requests sent at
once. It prints, for a plain ``python -m pyllama.server`` (4 slots; and 8, the slots of two replicas:
the reuse one server holding every conversation gets), the Ray endpoint at one replica, and at
two replicas routed by prefix and by Ray's default (power of two choices): the share of prompt
tokens reused from the engines' caches, the median time to first token, and the median latency
of a one-token request (the Ray path's overhead at one replica, against the plain server).
Every server runs on one thread with 4 slots unless said, so the rows compare routing, not hardware.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import openai

from _models import model_file

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from conversations import grow_conversations  # noqa: E402
from server_process import free_port, running_server  # noqa: E402


def one_token_latency(client: openai.OpenAI, model: str, requests: int = 30) -> float:
    """Median seconds of a one-token completion: what the path adds, since the work is nearly none."""
    times = []
    for i in range(requests):
        started = time.perf_counter()
        client.completions.create(model=model, prompt=f"probe {i}", max_tokens=1, temperature=0)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure(name: str, base: str, args: argparse.Namespace, topic: str) -> None:
    client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=300)
    latency = one_token_latency(client, "bench")
    totals = grow_conversations(client, "bench", args.conversations, args.turns, args.max_tokens, topic=topic)
    print(f"| {name} | {100 * totals.reuse:.1f}% ({totals.cached_tokens}/{totals.prompt_tokens}) | "
          f"{1e3 * statistics.median(totals.first_token_s):.1f} | {1e3 * latency:.1f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny-f32")
    parser.add_argument("--conversations", type=int, default=8)
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=16)
    args = parser.parse_args()
    model = str(model_file(args.model))
    flags = ["--model", model, "--model_alias", "bench", "-t", "1", "-np", "4", "-c", "4096"]  # 1024 a slot

    print(f"{args.conversations} conversations x {args.turns} turns, {args.max_tokens} tokens a reply, {args.model}")
    print("| server | prompt tokens reused from cache | median time to first token (ms) | "
          "one-token request (ms) |\n|---|---|---|---|")
    for slots in (4, 8):
        with running_server(model, *flags[2:-4], "-np", str(slots), "-c", str(1024 * slots)) as base:
            measure(f"plain pyllama server, {slots} slots", base, args, f"Plain {slots}. ")

    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

    from pyllama.ray.app import application

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    for _ in range(2):
        cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, log_to_driver=False)
    port = free_port()
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        for replicas, routing in ((1, "prefix"), (2, "prefix"), (2, "power_of_two")):
            serve.run(application(flags, routing, replica_options={"num_replicas": replicas}), name="pyllama",
                      route_prefix="/")
            measure(f"Ray, {replicas} replica(s), {routing} routing", f"http://127.0.0.1:{port}", args,
                    f"{replicas} {routing}. ")
            serve.delete("pyllama")
    finally:
        serve.shutdown()
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main()
