"""pyllama on Ray Serve: the openai client against the Ray endpoint, prefix-aware routing on a
growing-conversation workload, and a replica killed mid-load. One local cluster for the module
(a head and two simulated one-CPU nodes, a replica on each): Ray is slow to start on few cores."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from conversations import READABLE, grow_conversations
from server_process import free_port, running_server

ray = pytest.importorskip("ray")
from ray import serve  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

pytestmark = pytest.mark.ray

REPLICAS = 2


@pytest.fixture(scope="module")
def flags(tiny_spm) -> list[str]:
    return ["--model", str(tiny_spm[0]), "--model_alias", "tiny", "-c", "8192", "-np", "4", "-t", "1",
            "--embedding", "--pooling", "mean"]


def deploy(flags: list[str], routing: str) -> None:
    from pyllama.ray.app import application

    serve.run(application(flags, routing, replica_options={"num_replicas": REPLICAS}), name="pyllama",
              route_prefix="/")


@pytest.fixture(scope="module")
def endpoint(flags):
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})  # the head runs Serve's own actors
    for _ in range(REPLICAS):
        cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, log_to_driver=False)
    port = free_port()
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        deploy(flags, "prefix")
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()
        cluster.shutdown()


@pytest.fixture(scope="module")
def single(flags):
    with running_server(flags[1], *flags[2:]) as base:
        yield base


def client_of(base: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=120)


def test_the_openai_client_gets_what_a_single_server_gives(endpoint, single):
    ray_client, one = client_of(endpoint), client_of(single)
    chat = dict(model="tiny", messages=[{"role": "user", "content": "the planets"}], max_tokens=12, temperature=0,
                logit_bias=READABLE)
    expected = one.chat.completions.create(**chat).choices[0].message.content
    assert ray_client.chat.completions.create(**chat).choices[0].message.content == expected
    assert "".join(c.choices[0].delta.content or "" for c in ray_client.chat.completions.create(
        stream=True, **chat)) == expected
    vectors = [client.embeddings.create(model="tiny", input=["hello world", "the cats sat"]).data
               for client in (ray_client, one)]
    for through_ray, direct in zip(*vectors, strict=True):
        assert through_ray.embedding == pytest.approx(direct.embedding, abs=1e-5)
    raw = ray_client.models.with_raw_response.list()
    assert raw.headers["x-pyllama-replica"].startswith("SERVE_REPLICA::pyllama#PyllamaReplica#")
    assert [m.id for m in raw.parse().data] == ["tiny"]
    for method, path in (("GET", "/slots"), ("POST", "/slots/0?action=erase"), ("GET", "/metrics")):
        response = httpx.request(method, f"{endpoint}{path}", json={} if method == "POST" else None)
        assert response.status_code == 501
        assert "not served through the Ray endpoint" in response.json()["error"]["message"]


def test_prefix_routing_reuses_more_cached_prompt_than_power_of_two(endpoint, flags):
    """The same workload, routed by prefix, then by Ray's default: counts, never times."""
    client = client_of(endpoint)
    # bench/ray_serve.py's workload: as many conversations as the replicas have slots, so one that
    # moves to the other replica finds its history gone (with fewer, the shared system prompt
    # cached everywhere makes up most of the reuse whatever the routing)
    workload = {"conversations": 8, "turns": 5, "max_tokens": 16}
    by_prefix = grow_conversations(client, "tiny", topic="Voyage one. ", **workload)
    deploy(flags, "power_of_two")
    try:
        by_load = grow_conversations(client, "tiny", topic="Voyage two. ", **workload)
    finally:
        deploy(flags, "prefix")
    assert by_prefix.requests == by_load.requests == 40
    assert by_prefix.reuse > by_load.reuse + 0.1, (by_prefix.reuse, by_load.reuse)


def _open_stream(http: httpx.Client, endpoint: str, k: int):
    body = {"model": "tiny", "messages": [{"role": "user", "content": f"story number {k}, a long one please"}],
            "max_tokens": 1800, "temperature": 0, "logit_bias": READABLE, "stream": True}
    stream = http.stream("POST", f"{endpoint}/v1/chat/completions", json=body)
    response = stream.__enter__()
    assert response.status_code == 200
    lines = response.iter_lines()
    assert next(line for line in lines if line.startswith("data: "))  # running: its first chunk came
    return stream, response, lines


def _ending(lines) -> str:
    """'done' for a stream that finished, else the error its last event carried."""
    last = None
    for line in lines:
        if line.startswith("data: "):
            last = line[len("data: "):]
    if last == "[DONE]":
        return "done"
    return json.loads(last)["error"]["code"] if last else "nothing"


def _continuation(k: int, max_tokens: int) -> dict:
    """The next turn of stream ``k``'s conversation: the router sends it where that stream runs."""
    messages = [{"role": "user", "content": f"story number {k}, a long one please"},
                {"role": "assistant", "content": "Once"}, {"role": "user", "content": "go on"}]
    return {"model": "tiny", "messages": messages, "max_tokens": max_tokens, "temperature": 0,
            "logit_bias": READABLE}


def test_a_replica_killed_mid_load(endpoint):
    with httpx.Client(timeout=120) as http, ThreadPoolExecutor(1) as background:
        streams = [_open_stream(http, endpoint, k) for k in range(4)]
        homes = [response.headers["x-pyllama-replica"] for _, response, _ in streams]
        assert len(set(homes)) == REPLICAS  # new conversations spread over both replicas
        victim = homes[-1]  # its last stream has surely not finished
        probe = http.post(f"{endpoint}/v1/chat/completions", json=_continuation(3, 1))
        assert probe.headers["x-pyllama-replica"] == victim  # so the next continuation goes there too
        unanswered = background.submit(http.post, f"{endpoint}/v1/chat/completions", json=_continuation(3, 1800))
        time.sleep(1)  # generating on the victim, nothing sent yet (a whole answer comes at its end)
        ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
        endings = [_ending(lines) for _, _, lines in streams]
        for stream, _, _ in streams:
            stream.__exit__(None, None, None)
        retried = unanswered.result()
    assert endings == ["replica_unavailable" if home == victim else "done" for home in homes]
    assert retried.status_code == 200, retried.text  # sent again, to the replica left
    assert retried.headers["x-pyllama-replica"] not in (victim, None)
    assert retried.json()["choices"][0]["finish_reason"] in ("length", "stop")
    client = client_of(endpoint)
    for _ in range(4):  # the endpoint answers at once, from the replica left
        assert client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}],
                                              max_tokens=4, logit_bias=READABLE).choices[0].finish_reason == "length"
    deadline, served = time.monotonic() + 120, set()
    while len(served - {victim}) < REPLICAS and time.monotonic() < deadline:  # and Ray starts a new replica
        served.add(client.models.with_raw_response.list().headers["x-pyllama-replica"])
        time.sleep(0.2)
    assert len(served - {victim}) == REPLICAS, f"Ray did not replace the killed replica: {served}"
