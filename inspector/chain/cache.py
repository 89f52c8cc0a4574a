"""A TTL cache that also shares in-flight work: N tunnels to one host, one probe.

Tunnels to the same upstream arrive in bursts (a page load opens many at once); the
first asks, the rest await the same task, and later ones within the TTL get the
stored answer.

The cache is bounded by the memory its entries hold, not by their number: a server
chooses how large its chain is (a verdict on 100 certificates holds 70 to 250 KB as
their names are short or long, a probe of a 100 KB chain its bytes) and a client
chooses how many names it asks for, so a count alone lets a few thousand entries take
gigabytes. Each entry weighs its `deep_size`; past `max_bytes` (default 32 MiB) the
entries closest to expiry go first (cachetools' TTLCache), and an entry larger than
the whole budget is not kept.
"""

from __future__ import annotations

import asyncio
import functools
import sys
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from cachetools import TTLCache

V = TypeVar("V")

DEFAULT_BYTES = 32 * 2**20


class SharedCache(Generic[V]):
    def __init__(
        self,
        ttl: float,
        max_bytes: int = DEFAULT_BYTES,
        keep: Callable[[V], bool] = lambda _: True,
    ) -> None:
        self._done: TTLCache[Hashable, V] = TTLCache(maxsize=max_bytes, ttl=ttl, getsizeof=deep_size)
        self._inflight: dict[Hashable, asyncio.Future[V]] = {}
        self._keep = keep  # results worth remembering (a timeout is not)
        self.hits = 0  # answered from the cache or by joining work in flight
        self.misses = 0  # work actually started

    @property
    def in_flight(self) -> int:
        return len(self._inflight)

    @property
    def bytes(self) -> int:
        """What the stored entries weigh (deep_size), at most max_bytes."""
        return int(self._done.currsize)  # a sum of deep_size ints; typed float for any getsizeof

    def __len__(self) -> int:
        return len(self._done)

    async def get(self, key: Hashable, make: Callable[[], Awaitable[V]]) -> V:
        if key in self._done:
            self.hits += 1
            return self._done[key]
        fut = self._inflight.get(key)
        if fut is None:
            self.misses += 1
            fut = asyncio.ensure_future(make())
            self._inflight[key] = fut
            fut.add_done_callback(functools.partial(self._settle, key))
        else:
            self.hits += 1
        # shield: one waiter being cancelled must not cancel the work the others await
        return await asyncio.shield(fut)

    def _settle(self, key: Hashable, fut: asyncio.Future[V]) -> None:
        self._inflight.pop(key, None)
        if not fut.cancelled() and fut.exception() is None and self._keep(fut.result()):
            try:
                self._done[key] = fut.result()
            except ValueError:
                pass  # larger than the whole budget: answered, not remembered


def deep_size(obj: object) -> int:
    """Bytes held by `obj` and everything it refers to (containers, dataclasses, slots),
    each object counted once."""
    seen: set[int] = set()
    total = 0
    stack = [obj]
    while stack:
        o = stack.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        total += sys.getsizeof(o)
        if isinstance(o, (str, bytes, bytearray, int, float, bool, type(None))):
            continue
        if isinstance(o, dict):
            stack.extend(o.keys())
            stack.extend(o.values())
        elif isinstance(o, (list, tuple, set, frozenset)):
            stack.extend(o)
        else:
            if hasattr(o, "__dict__"):
                stack.append(o.__dict__)
            for cls in type(o).__mro__:
                slots = getattr(cls, "__slots__", ())
                for name in (slots,) if isinstance(slots, str) else slots:
                    if hasattr(o, name):
                        stack.append(getattr(o, name))
    return total
