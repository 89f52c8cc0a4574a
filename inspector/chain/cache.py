"""A TTL cache that also shares in-flight work: N tunnels to one host, one probe.

Tunnels to the same upstream arrive in bursts (a page load opens many at once); the
first asks, the rest await the same task, and later ones within the TTL get the
stored answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from cachetools import TTLCache

V = TypeVar("V")


class SharedCache(Generic[V]):
    def __init__(
        self,
        ttl: float,
        maxsize: int = 4096,
        keep: Callable[[V], bool] = lambda _: True,
    ) -> None:
        self._done: TTLCache = TTLCache(maxsize=maxsize, ttl=ttl)
        self._inflight: dict[Hashable, asyncio.Future] = {}
        self._keep = keep  # results worth remembering (a timeout is not)
        self.hits = 0  # answered from the cache or by joining work in flight
        self.misses = 0  # work actually started

    @property
    def in_flight(self) -> int:
        return len(self._inflight)

    async def get(self, key: Hashable, make: Callable[[], Awaitable[V]]) -> V:
        if key in self._done:
            self.hits += 1
            return self._done[key]
        fut = self._inflight.get(key)
        if fut is None:
            self.misses += 1
            fut = asyncio.ensure_future(make())
            self._inflight[key] = fut
            fut.add_done_callback(lambda f, k=key: self._settle(k, f))
        else:
            self.hits += 1
        # shield: one waiter being cancelled must not cancel the work the others await
        return await asyncio.shield(fut)

    def _settle(self, key: Hashable, fut: asyncio.Future) -> None:
        self._inflight.pop(key, None)
        if not fut.cancelled() and fut.exception() is None and self._keep(fut.result()):
            self._done[key] = fut.result()
