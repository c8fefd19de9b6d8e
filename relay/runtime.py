"""What a running relay holds: config, store, router, dispatchers, dispatch log.

The web handlers and the daemon share one `Runtime`. It owns the dispatchers and brings
them in line with a new config on reload: new destinations start, removed ones stop
(their backlog stays in the store), changed ones restart with the new settings.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Iterable

from .config import Config, HttpDestination
from .destinations.http import HttpSender
from .dispatch import Dispatcher
from .dispatch_log import DispatchLog
from .routing import Router
from .store import Store

log = logging.getLogger("relay")

STOP_GRACE_S = 10.0


class Runtime:
    def __init__(self, config: Config, store: Store, dispatch_log: DispatchLog) -> None:
        self.config = config
        self.store = store
        self.log = dispatch_log
        self.router = Router(config.routes, config.destinations)
        self.dispatchers: dict[str, Dispatcher] = {}
        self.paused: dict[str, float | None] = {}
        self.ingested: Counter[str] = Counter()  # by source
        self.started_at = time.time()

    def wake(self, destinations: Iterable[str]) -> None:
        for name in destinations:
            if (d := self.dispatchers.get(name)) is not None:
                d.wake()

    def is_paused(self, destination: str) -> bool:
        return destination in self.paused

    async def start_dispatchers(self) -> None:
        for dest in self.config.destinations.values():
            if isinstance(dest, HttpDestination):
                await self._start(dest)

    async def _start(self, dest: HttpDestination) -> None:
        dispatcher = Dispatcher(dest, self.store, HttpSender(dest), self.log)
        dispatcher.paused = dest.name in self.paused
        self.dispatchers[dest.name] = dispatcher
        await dispatcher.start()

    async def stop_dispatchers(self, grace_s: float = STOP_GRACE_S) -> None:
        await asyncio.gather(*(d.stop(grace_s) for d in self.dispatchers.values()))

    async def apply(self, config: Config) -> None:
        """Switch to a new config: routes apply to new events; dispatchers follow destinations."""
        old = self.dispatchers
        keep = {n: d for n, d in old.items() if config.destinations.get(n) == d.dest}
        stopping = [d for n, d in old.items() if n not in keep]
        await asyncio.gather(*(d.stop(STOP_GRACE_S) for d in stopping))
        self.config = config
        self.router = Router(config.routes, config.destinations)
        self.dispatchers = keep
        for dest in config.destinations.values():
            if isinstance(dest, HttpDestination) and dest.name not in keep:
                await self._start(dest)

    async def refresh_paused(self) -> None:
        """Pick up pause/resume made by the CLI; resume timed pauses that have run out."""
        paused = await self.store.paused()
        now = time.time()
        for name, until in list(paused.items()):
            if until is not None and until <= now:
                await self.store.resume(name)
                del paused[name]
                log.info("resumed destination=%s reason=pause-expired", name)
        resumed = set(self.paused) - set(paused)
        self.paused = paused
        for name, dispatcher in self.dispatchers.items():
            dispatcher.paused = name in paused
        self.wake(resumed)

    async def readiness_problems(self) -> list[str]:
        problems = []
        try:
            await self.store.next_due("")
        except Exception as exc:
            problems.append(f"storage: {exc}")
        problems += [
            f"dispatcher {n} is not running" for n, d in self.dispatchers.items() if not d.running
        ]
        return problems

    def summary(self) -> dict[str, int]:
        counts: Counter[str] = Counter()
        for d in self.dispatchers.values():
            counts.update(d.counts)
        return {"ingested": sum(self.ingested.values()), **counts}
