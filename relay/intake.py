"""Taking events in: the one door every event passes through on its way to the store.

The ingest API (validated: all or nothing), the tracking handlers (built by relay itself,
trusted) and the spool drain all hand their events to one `Intake`, built by the daemon;
the app factory gives it to the ingest and tracking surfaces' constructors. It routes and serialises each event, sheds
load when the writer is behind, appends (returning once committed), counts what was stored
and what was a duplicate, wakes the dispatchers of the destinations that got work, and,
for tracking events while PostgreSQL is away, keeps them in the local spool.
"""

from __future__ import annotations

import logging
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Protocol

import orjson

from .domain.events import Problem, validate
from .domain.routing import Router
from .models import NewEvent
from .store import StorageUnavailable
from .store.spool import Spool

log = logging.getLogger("relay")
tracking_log = logging.getLogger("relay.tracking")


class Invalid(ValueError):
    """Some items of a batch are not events; nothing of the batch is taken."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(f"{len(problems)} invalid events")
        self.problems = problems


class Overloaded(Exception):
    """The store's writer is behind: try again shortly (503 with Retry-After)."""


class Appends(Protocol):
    """The store's side intake needs (`Store` has it)."""

    @property
    def queued_events(self) -> int: ...

    async def append(self, events: list[NewEvent]) -> list[bool]: ...


class Counts(Protocol):
    """Told what was stored and what was a duplicate (the metrics)."""

    def ingested(self, batch: list[NewEvent], source: str) -> None: ...

    def duplicates(self, n: int, source: str) -> None: ...


class Intake:
    def __init__(
        self,
        store: Appends,
        router: Router,
        counts: Counts,
        wake: Callable[[Iterable[str]], None],
        spool: Spool | None = None,
    ) -> None:
        self.store = store
        self.router = router
        self.counts = counts
        self.wake = wake
        self.spool = spool  # tracking events kept while PostgreSQL is away
        self.ingested: Counter[str] = Counter()  # by source
        self.duplicates: Counter[str] = Counter()  # by source

    def reroute(self, router: Router) -> None:
        """A reload's routes apply to the events taken in from now on."""
        self.router = router

    def accept(self, items: list, received_at: float, max_queued: int) -> list[NewEvent]:
        """Validate a client's batch (all or nothing: `Invalid`), check the writer keeps up
        (`Overloaded` beyond `max_queued` events waiting), then route and serialise each
        event. An item with its own `id` is checked for a duplicate; an id relay made
        cannot collide."""
        problems: list[Problem] = []
        events = [validate(i, item, received_at, problems) for i, item in enumerate(items)]
        if problems:
            raise Invalid(problems)
        if self.store.queued_events > max_queued:
            raise Overloaded()
        return [
            self.event(e, received_at, check_duplicate="id" in item)
            for e, item in zip(events, items, strict=True)
        ]

    def event(
        self, event: dict, received_at: float, check_duplicate: bool = True, first: bool = False
    ) -> NewEvent:
        """One event relay built itself (trusted), routed and serialised, ready for `commit`.
        `first`: a tracking event, which the store marks first-of-its-kind or not."""
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

    async def keep(self, batch: list[NewEvent], source: str) -> bool:
        """`commit` for tracking events, which must never break a link: while the shared
        database is away they go to the spool. False when they could not be kept (logged)."""
        try:
            stored = await self.store.append(batch)  # not via commit: no extra await per hit
        except StorageUnavailable as exc:
            if await self._spool(batch):
                return True
            tracking_log.error("tracking event lost: storage unavailable: %s", exc)
            return False
        self._count(batch, stored, source)
        return True

    def _count(self, batch: list[NewEvent], stored: list[bool], source: str) -> int:
        new = batch if all(stored) else [e for e, s in zip(batch, stored, strict=True) if s]
        self.ingested[source] += len(new)
        self.counts.ingested(new, source)
        if duplicates := len(batch) - len(new):
            self.duplicates[source] += duplicates
            self.counts.duplicates(duplicates, source)
        self.wake({name for e in new for name, _ in e.deliveries})
        return len(new)

    async def _spool(self, batch: list[NewEvent]) -> bool:
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

    def close(self) -> None:
        if self.spool is not None:
            self.spool.close()
