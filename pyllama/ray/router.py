"""Ray Serve's request-router hook for the replica deployment: each request goes where
:class:`~pyllama.ray.routing.PrefixAffinity` ranks it.

It runs in the process holding the deployment handle (the ingress), and sees each request's
arguments: the first is its routing key (pyllama/ray/keys.py). It does not take Ray's FIFO
mixin, which hands a freed replica to the oldest waiting request whatever that request's prefix;
each request here gets a replica chosen for it. Ray tries the ranks in order and takes, within
a rank, the replica with the shortest queue that has room.

What the policy remembers lives in this process: with several ingress replicas, each routes by
the requests it saw itself (a conversation's turns through different ingresses may part).
"""

from __future__ import annotations

from typing import Any

from ray.serve.request_router import PendingRequest, ReplicaID, ReplicaResult, RequestRouter, RunningReplica

from .routing import PrefixAffinity


def _key(request: PendingRequest | None) -> str:
    args = request.args if request is not None else ()
    return args[0] if args and isinstance(args[0], str) else ""


class PrefixAwareRouter(RequestRouter):
    def initialize_state(self, **kwargs: Any) -> None:
        """``kwargs``: PrefixAffinity's (the deployment's ``request_router_kwargs``)."""
        self.policy = PrefixAffinity(**kwargs)

    async def choose_replicas(self, candidate_replicas: list[RunningReplica],
                              pending_request: PendingRequest | None = None) -> list[list[RunningReplica]]:
        by_id = {replica.replica_id.unique_id: replica for replica in candidate_replicas}
        loads = {unique_id: self.replica_queue_len_cache.get(replica.replica_id)
                 for unique_id, replica in by_id.items()}
        return [[by_id[unique_id] for unique_id in rank] for rank in self.policy.choose(_key(pending_request), loads)]

    def on_request_routed(self, pending_request: PendingRequest, replica_id: ReplicaID,
                          result: ReplicaResult) -> None:
        self.policy.record(_key(pending_request), replica_id.unique_id)

    def update_replicas(self, replicas: list[RunningReplica]) -> None:
        super().update_replicas(replicas)
        self.policy.keep({replica.replica_id.unique_id for replica in replicas})
