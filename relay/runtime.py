"""What a running relay holds: config, store, router, dispatchers, dispatch log.

The web handlers and the daemon share one `Runtime`. It owns the dispatchers and brings
them in line with a new config on reload: new destinations start, removed ones stop
(their backlog stays in the store), changed ones restart with the new settings.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import sqlite3
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import orjson

from .activity import MINUTES, Activity, LastAttempt
from .bots import BotDetector
from .config import Config, PullDestination, PushDestination
from .dispatch import Dispatcher
from .dispatch_log import DispatchLog
from .metrics import Metrics
from .periodic import PeriodicDispatcher
from .routing import Router
from .senders import make_dispatcher
from .spool import Spool
from .store import AttemptFilter, NewEvent, StorageUnavailable, Store
from .tokens import Signer

log = logging.getLogger("relay")

STOP_GRACE_S = 10.0


def tracking_secrets(config: Config) -> tuple[str, ...]:
    """`tracking.secrets`, or one generated on first use and kept beside the database.

    Kept in a file so tracking links in messages already sent stay valid across restarts.
    """
    if config.tracking.secrets:
        return config.tracking.secrets
    path = Path(f"{config.storage.path}.tracking-secret")
    try:
        return (path.read_text().strip(),)
    except FileNotFoundError:
        pass
    secret = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process (relay link, a second start) made it first
        return (path.read_text().strip(),)
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    log.info("generated tracking secret path=%s", path)
    return (secret,)


class Runtime:
    def __init__(self, config: Config, store: Store, dispatch_log: DispatchLog) -> None:
        self.config = config
        self.store = store
        self.log = dispatch_log
        self.router = Router(config.routes, config.destinations)
        self.dispatchers: dict[str, Dispatcher] = {}
        self.pull_activity: dict[str, Activity] = {}  # pull destinations' leases and acks
        self.spool: Spool | None = None  # tracking events kept while PostgreSQL is away
        self.paused: dict[str, float | None] = {}
        self.ingested: Counter[str] = Counter()  # events stored, by source
        self.duplicates: Counter[str] = Counter()  # events not stored again (id known), by source
        self.pull_acked: Counter[str] = Counter()  # pull deliveries acked, by destination
        self.signer = Signer(tracking_secrets(config), config.server.public_url)
        self.bots = BotDetector(memory_s=config.tracking.bot_memory_s)
        self.started_at = time.time()
        self.metrics = Metrics()  # per runtime, not global: tests run many in one process
        self.metrics.watch(store, dispatch_log)

    def new_event(
        self, event: dict, received_at: float, check_duplicate: bool = True, first: bool = False
    ) -> NewEvent:
        """A validated event, routed and serialised, ready for `commit`."""
        etype = event["event_type"]
        key = (
            (etype, str(event["email"]), str(event.get("sendid", "")))
            if first and event.get("email")
            else None
        )
        return NewEvent(
            event["id"],
            etype,
            received_at,
            orjson.dumps(event),
            self.router.deliveries_for(event, received_at),
            check_duplicate,
            key,
        )

    async def commit(self, batch: list[NewEvent], source: str) -> int:
        """Store events (returns once committed), count them, wake their dispatchers.

        Returns how many were stored; the rest carried an id already stored and count as
        duplicates, so `ingested` agrees with the store.
        """
        stored = await self.store.append(batch)
        return self._count(batch, stored, source)

    def _count(self, batch: list[NewEvent], stored: list[bool], source: str) -> int:
        new = batch if all(stored) else [e for e, s in zip(batch, stored, strict=True) if s]
        self.ingested[source] += len(new)
        self.metrics.ingested(new, source)
        if duplicates := len(batch) - len(new):
            self.duplicates[source] += duplicates
            self.metrics.duplicates(duplicates, source)
        self.wake({name for e in new for name, _ in e.deliveries})
        return len(new)

    def acked(self, destination: str, n: int) -> None:
        """A pull client acked `n` deliveries: they count as delivered, like a push's 2xx."""
        self.pull_acked[destination] += n

    async def spool_events(self, batch: list[NewEvent]) -> bool:
        """Keep tracking events in the local spool while the shared database is away
        (PostgreSQL only); False when there is no spool or it cannot take them."""
        if self.spool is None:
            return False
        try:
            kept = await self.spool.put(batch)
        except (OSError, sqlite3.Error) as exc:
            log.error("spool write failed: %s", exc)
            return False
        if kept and self.spool.count == len(batch):
            log.warning("storage unavailable: spooling tracking events to %s", self.spool.path)
        return kept

    async def drain_spool(self) -> None:
        """Move spooled tracking events into the store once it answers again (upkeep)."""
        if self.spool is None or self.spool.count == 0:
            return

        async def append(events: list[NewEvent]) -> None:
            self._count(events, await self.store.append(events), "spool")

        try:
            moved = await self.spool.drain(append)
        except StorageUnavailable:
            return  # still away: next second
        if moved:
            log.info("spool drained events=%d left=%d", moved, self.spool.count)

    def wake(self, destinations: Iterable[str]) -> None:
        for name in destinations:
            if (d := self.dispatchers.get(name)) is not None:
                d.wake()

    async def recover(self, destinations: Iterable[str]) -> None:
        """After an operator's replay: each destination sends now, an open circuit probes."""
        for name in destinations:
            if (d := self.dispatchers.get(name)) is not None:
                d.recover()

    def is_paused(self, destination: str) -> bool:
        return destination in self.paused

    async def start_dispatchers(self) -> None:
        """Start a dispatcher per push destination, each with its live picture rebuilt from
        the store; note every backlog now, so the forecast's warm-up counts from start."""
        stats = await self.store.stats()
        now = time.time()
        for dest in self.config.destinations.values():
            if isinstance(dest, PullDestination):
                activity = self.pull_activity.setdefault(dest.name, Activity())
            else:
                activity = (await self._start(dest)).activity
            s = stats.destinations.get(dest.name)
            activity.trend(s.pending if s else 0, now)

    async def _start(self, dest: PushDestination) -> Dispatcher:
        dispatcher = make_dispatcher(dest, self.store, self.log)
        dispatcher.paused = dest.name in self.paused
        dispatcher.on_delivered = self.metrics.delivered
        await self._restore(dest.name, dispatcher.activity)  # before it records anything
        self.dispatchers[dest.name] = dispatcher
        await dispatcher.start()
        return dispatcher

    async def _restore(self, name: str, activity: Activity) -> None:
        """The last hour's attempts, the last success and the last failure, from the store."""
        now = time.time()
        minutes = await self.store.attempt_minutes(name, now - MINUTES * 60)
        last = {}
        for outcome in ("delivered", "failed"):
            rows = await self.store.attempts(AttemptFilter(name, outcome=outcome), 1)
            last[outcome] = (
                LastAttempt(rows[0].ts, rows[0].status, rows[0].error, rows[0].response)
                if rows
                else None
            )
        activity.restore(minutes, last["delivered"], last["failed"], now)

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
        self.signer = Signer(tracking_secrets(config), config.server.public_url)
        self.dispatchers = keep
        for dest in config.destinations.values():
            if not isinstance(dest, PullDestination) and dest.name not in keep:
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
        await self.recover(resumed)

    async def take_flushes(self) -> None:
        """Start the digests and uploads that `relay flush` asked for (upkeep, every second)."""
        for name in await self.store.take_flushes():
            dispatcher = self.dispatchers.get(name)
            if isinstance(dispatcher, PeriodicDispatcher):
                dispatcher.flush()
                log.info("flush destination=%s", name)
            elif dispatcher is not None:  # `relay dead replay` in another process: send now
                dispatcher.recover()
            else:
                log.warning("flush ignored destination=%s reason=not-periodic", name)

    async def readiness_problems(self) -> list[str]:
        problems = []
        try:
            await self.store.check_writable()
        except Exception as exc:
            problems.append(f"storage not writable: {exc}")
        problems += [
            f"dispatcher {n} is not running" for n, d in self.dispatchers.items() if not d.running
        ]
        return problems

    def summary(self) -> dict[str, int]:
        """The shutdown line's counters; every key always present, so logs parse alike."""
        counts: Counter[str] = Counter()
        for d in self.dispatchers.values():
            counts.update(d.counts)
        return {
            "ingested": sum(self.ingested.values()),
            "duplicates": sum(self.duplicates.values()),
            "delivered": counts["delivered"] + sum(self.pull_acked.values()),
            "retried": counts["retry"],
            "dead": counts["dead"],
        }
