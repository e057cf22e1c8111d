"""Which replica a request should go to: the one most likely to hold its prompt's prefix in
its KV cache, unless the replicas' loads are too far apart.

Pure Python, no Ray: :class:`~pyllama.ray.router.PrefixAwareRouter` feeds it replica ids, their
queue lengths and each request's routing key (pyllama/ray/keys.py), and tells it where each
request went. What it remembers is an approximate prefix tree per replica: the key cut into
blocks of ``block_chars`` characters, each block named by a hash chained over the blocks before
it (so a hash stands for the whole prefix up to its end, as the engine's cache reuse sees a
prefix), kept in an LRU of ``capacity_blocks`` per replica, with the last whole block of each
key it took marked.

A key that continues one a replica took (the next turn of a conversation: its match ends at a
marked block, or covers the key) goes back to that replica, where an engine slot holds the whole
history. A key that only shares a beginning with earlier ones (a new conversation under a
common system prompt) is routed as new, to the least loaded replica: sending those to the
replica that first saw the system prompt would pile every conversation onto it, where they
would evict each other's slots; every replica soon holds the system prompt anyway. The
replica's real cache may have dropped a prefix this still remembers: a wrong guess costs a
prompt evaluation, never a wrong answer.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Mapping, Sequence

Ranks = list[list[str]]  # replica ids, most preferred first: Ray tries each rank in turn


class PrefixAffinity:
    def __init__(self, block_chars: int = 32, capacity_blocks: int = 100_000, imbalance: int = 8,
                 min_match: float = 0.1, rng: random.Random | None = None) -> None:
        """``imbalance``: past this gap between the longest and the shortest known queue, route by
        load alone (power of two choices). ``min_match``: the share of the key a replica must hold
        to be preferred for it (the engine's own slot reuse asks for a tenth of the prompt)."""
        if block_chars < 1 or capacity_blocks < 1 or imbalance < 0 or not 0 <= min_match <= 1:
            raise ValueError(f"expected block_chars >= 1, capacity_blocks >= 1, imbalance >= 0 and 0 <= min_match "
                             f"<= 1, got {block_chars}, {capacity_blocks}, {imbalance}, {min_match}")
        self.block_chars, self.capacity_blocks = block_chars, capacity_blocks
        self.imbalance, self.min_match = imbalance, min_match
        self._rng = rng or random.Random()
        # replica id -> block hashes, least recent first -> marked (the last whole block of a key it took)
        self._held: dict[str, OrderedDict[int, bool]] = {}

    def blocks(self, key: str) -> list[int]:
        """The chained hashes of the key's blocks, the last one possibly shorter."""
        hashes, chained = [], 0
        for start in range(0, len(key), self.block_chars):
            chained = hash((chained, key[start:start + self.block_chars]))
            hashes.append(chained)
        return hashes

    def matched(self, replica: str, blocks: Sequence[int]) -> int:
        """How many leading blocks of a key ``replica`` has seen."""
        held = self._held.get(replica, {})
        count = 0
        for block in blocks:
            if block not in held:
                break
            count += 1
        return count

    def continued(self, replica: str, blocks: Sequence[int]) -> int:
        """The match of a key that continues (or repeats) a key ``replica`` took; 0 for one that
        only shares a beginning with its keys."""
        count = self.matched(replica, blocks)
        return count if count == len(blocks) or (count and self._held[replica][blocks[count - 1]]) else 0

    def choose(self, key: str, loads: Mapping[str, int | None]) -> Ranks:
        """Ranks of the replicas in ``loads`` (id -> requests it is running, None if unknown)."""
        replicas = list(loads)
        if len(replicas) <= 1:
            return [replicas]
        known = [load for load in loads.values() if load is not None]
        blocks = self.blocks(key)
        if not blocks or (known and max(known) - min(known) > self.imbalance):
            return [self._rng.sample(replicas, 2)]  # power of two choices: Ray takes the shorter queue
        matches = {replica: self.continued(replica, blocks) for replica in replicas}
        best = max(matches.values())
        if best >= self.min_match * len(blocks) and best > 0:
            preferred = [replica for replica in replicas if matches[replica] == best]
        else:  # a new prefix: the least loaded replica, then the one remembering least
            def cost(replica: str) -> tuple[int, int]:
                return loads[replica] or 0, len(self._held.get(replica, ()))
            lowest = min(cost(replica) for replica in replicas)
            preferred = [replica for replica in replicas if cost(replica) == lowest]
        rest = [replica for replica in replicas if replica not in preferred]
        return [preferred, rest] if rest else [preferred]

    def record(self, key: str, replica: str) -> None:
        """``replica`` took a request with ``key``: it now likely holds that prefix."""
        held = self._held.setdefault(replica, OrderedDict())
        blocks = self.blocks(key)
        for block in blocks:
            held[block] = held.get(block, False)
            held.move_to_end(block)
        whole = len(key) // self.block_chars  # the key's next turn shares its whole blocks, not a shorter last one
        if whole:
            held[blocks[whole - 1]] = True
        while len(held) > self.capacity_blocks:
            held.popitem(last=False)

    def keep(self, replicas: set[str]) -> None:
        """Forget the replicas not in ``replicas`` (gone: their caches went with them)."""
        for gone in self._held.keys() - replicas:
            del self._held[gone]
