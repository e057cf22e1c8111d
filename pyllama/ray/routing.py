"""Which replica a request should go to: the one most likely to hold its prompt's prefix in
its KV cache, unless the replicas' loads are too far apart.

Pure Python, no Ray: :class:`~pyllama.ray.router.PrefixAwareRouter` feeds it replica ids, their
queue lengths and each request's routing key (pyllama/ray/keys.py, prompt_keys.py), and tells it
where each request went. What it remembers per replica is an approximate prefix tree of the keys
it took: each key cut into blocks of ``block_chars`` characters (tokens, for a key of tokens),
each whole block named by a hash chained over the blocks before it (so a hash stands for the
whole prefix up to its end, as the engine's cache reuse sees a prefix), and the rest of the key
after its last whole block, kept under that block's hash: together they say where each key ended.
Both are kept in LRUs of ``capacity_blocks`` entries per replica.

A key that continues one a replica took (the next turn of a conversation: it starts with that
whole earlier key) goes back to that replica, where an engine slot holds the whole history. A
key that only shares a beginning with earlier ones (a new conversation under a common system
prompt) is routed as new, to the least loaded replica: sending those to the replica that first
saw the system prompt would pile every conversation onto it, where they would evict each other's
slots; every replica soon holds the system prompt anyway. The replica's real cache may have
dropped a prefix this still remembers: a wrong guess costs a prompt evaluation, never a wrong
answer.
"""

from __future__ import annotations

import random
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Mapping, Sequence

SENDING_SECONDS = 2.0  # how long a routed request counts against its replica before Ray's queue length does
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
        self._held: dict[str, OrderedDict[int, None]] = {}  # replica -> its keys' whole blocks, least recent first
        # replica -> hash of a key's whole blocks (0: none) -> what followed them in the keys it took
        self._ends: dict[str, OrderedDict[int, set[str]]] = {}
        self._sending: deque[tuple[float, str, str]] = deque()  # (when, key, replica) of new prefixes routed

    def blocks(self, key: str) -> list[int]:
        """The chained hashes of the key's whole blocks."""
        hashes, chained = [], 0
        for start in range(0, len(key) - self.block_chars + 1, self.block_chars):
            chained = hash((chained, key[start:start + self.block_chars]))
            hashes.append(chained)
        return hashes

    def matched(self, replica: str, blocks: Sequence[int]) -> int:
        """How many leading whole blocks of a key ``replica`` has seen."""
        held = self._held.get(replica, {})
        count = 0
        for block in blocks:
            if block not in held:
                break
            count += 1
        return count

    def continued(self, replica: str, key: str) -> int:
        """How much of ``key`` (in characters) is a key ``replica`` took, when ``key`` starts with
        one (continues or repeats it); 0 when it only shares a beginning with its keys."""
        blocks, ends = self.blocks(key), self._ends.get(replica, {})
        for whole in range(self.matched(replica, blocks), -1, -1):  # the longest earlier key first
            rest = key[whole * self.block_chars:]
            tails = [tail for tail in ends.get(blocks[whole - 1] if whole else 0, ()) if rest.startswith(tail)]
            if tails:
                return whole * self.block_chars + max(map(len, tails))
        return 0

    def choose(self, key: str, loads: Mapping[str, int | None]) -> Ranks:
        """Ranks of the replicas in ``loads`` (id -> requests it is running, None if unknown)."""
        replicas = list(loads)
        if len(replicas) <= 1:
            return [replicas]
        known = [load for load in loads.values() if load is not None]
        if not key or (known and max(known) - min(known) > self.imbalance):
            return [self._rng.sample(replicas, 2)]  # power of two choices: Ray takes the shorter queue
        matches = {replica: self.continued(replica, key) for replica in replicas}
        best = max(matches.values())
        if best >= self.min_match * len(key) and best > 0:
            preferred = [replica for replica in replicas if matches[replica] == best]
        else:  # a new prefix: the least loaded replica, then the one remembering least
            sent = self._sent()
            def cost(replica: str) -> tuple[int, int]:
                return (loads[replica] or 0) + sent[replica], len(self._held.get(replica, ()))
            preferred = [min(replicas, key=cost)]
            self._sending.append((time.monotonic(), key, preferred[0]))
        rest = [replica for replica in replicas if replica not in preferred]
        return [preferred, rest] if rest else [preferred]

    def _sent(self) -> Counter[str]:
        """Requests with new prefixes sent to each replica and not yet recorded: Ray's queue
        lengths lag behind a burst of them, which would otherwise all go to the same replica."""
        while self._sending and time.monotonic() - self._sending[0][0] > SENDING_SECONDS:
            self._sending.popleft()  # never recorded (cancelled): no longer counted
        return Counter(replica for _, _, replica in self._sending)

    def record(self, key: str, replica: str) -> None:
        """``replica`` took a request with ``key``: it now likely holds that prefix."""
        for index, (_, sent_key, _) in enumerate(self._sending):
            if sent_key == key:
                del self._sending[index]
                break
        held = self._held.setdefault(replica, OrderedDict())
        blocks = self.blocks(key)
        for block in blocks:
            held[block] = None
            held.move_to_end(block)
        ends = self._ends.setdefault(replica, OrderedDict())
        end = blocks[-1] if blocks else 0
        ends.setdefault(end, set()).add(key[len(blocks) * self.block_chars:])
        ends.move_to_end(end)
        for remembered in (held, ends):
            while len(remembered) > self.capacity_blocks:
                remembered.popitem(last=False)

    def keep(self, replicas: set[str]) -> None:
        """Forget the replicas not in ``replicas`` (gone: their caches went with them)."""
        for remembered in (self._held, self._ends):
            for gone in remembered.keys() - replicas:
                del remembered[gone]
