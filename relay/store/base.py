"""The queue interface every storage backend implements, and the values it trades in.

A delivery is one (event, destination) pair. Its life: `pending` (due at `due_at`) →
`leased` by a claim (until the lease runs out) → `delivered`, back to `pending` by a retry,
or `dead`. A `dead` delivery goes back to `pending` only by replay. Every claim carries a
fresh `lease` token, and ack/retry/dead only act on a delivery whose token still matches,
so a claim that has expired and been re-claimed can never be finished twice.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Protocol

from ..models import Attempt, Claimed, NewEvent, State


class StorageUnavailable(Exception):
    """The store cannot take writes right now (disk full, locked, closed): answer 503."""


@dataclass(slots=True)
class DestinationStats:
    pending: int = 0
    leased: int = 0
    dead: int = 0
    delivered: int = 0
    oldest_pending_s: float | None = None

    def as_dict(self) -> dict:
        return {
            "pending": self.pending,
            "leased": self.leased,
            "dead": self.dead,
            "delivered": self.delivered,
            "oldest_pending_s": self.oldest_pending_s,
        }


@dataclass(slots=True)
class Stats:
    events: int = 0
    unrouted: int = 0
    destinations: dict[str, DestinationStats] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "events": self.events,
            "unrouted": self.unrouted,
            "destinations": {k: v.as_dict() for k, v in sorted(self.destinations.items())},
        }


@dataclass(frozen=True, slots=True)
class DeadDelivery:
    delivery_id: int
    event_id: str
    event_type: str
    destination: str
    attempts: int
    last_error: str | None
    created_at: float
    died_at: float

    def as_dict(self) -> dict:
        return {
            "id": self.delivery_id,
            "event_id": self.event_id,
            "event_type": self.event_type,
            "destination": self.destination,
            "attempts": self.attempts,
            "last_error": self.last_error,
            "received_at": self.created_at,
            "died_at": self.died_at,
        }


ATTEMPTS_KEPT = 20  # per delivery: the oldest beyond this are dropped as new ones come


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    delivery_id: int
    event_id: str
    event_type: str
    destination: str
    attempt: int  # 1 for the first try
    ts: float
    outcome: str  # delivered | retry | dead
    status: int | None
    ms: float
    error: str | None
    response: str | None

    def as_dict(self) -> dict:
        return {
            "attempt": self.attempt,
            "ts": self.ts,
            "outcome": self.outcome,
            "status": self.status,
            "ms": round(self.ms, 1),
            "error": self.error,
            "response": self.response,
            "event_id": self.event_id,
            "event_type": self.event_type,
            "destination": self.destination,
        }


@dataclass(frozen=True, slots=True)
class AckHistory:
    """A pull destination's acks as the store keeps them: one row per destination and
    minute, to which each ack batch adds (a push destination has its attempts instead)."""

    minutes: list[tuple[int, int]]  # (Unix minute, events acked in it)
    last: tuple[float, int, int] | None  # the newest batch: (when, events, batch id)


@dataclass(frozen=True, slots=True)
class AttemptFilter:
    destination: str | None = None
    outcome: str | None = None  # delivered | retry | dead | failed (retry or dead)
    event_type: str | None = None
    since: float | None = None
    until: float | None = None
    before: tuple[float, int, int] | None = (
        None  # keyset: (ts, delivery_id, attempt) of the last row seen
    )


@dataclass(frozen=True, slots=True)
class DeliveryDetail:
    delivery_id: int
    destination: str
    state: State
    due_at: float  # pending: next attempt; leased: lease expiry
    attempts: int
    last_error: str | None
    updated_at: float
    history: tuple[AttemptRecord, ...]  # oldest first


@dataclass(frozen=True, slots=True)
class EventDetail:
    id: str
    event_type: str
    received_at: float
    body: bytes
    deliveries: tuple[DeliveryDetail, ...]


@dataclass(frozen=True, slots=True)
class AuditEntry:
    ts: float
    actor: str  # the console token's name, "loopback" or "cli"
    action: str  # pause | resume | replay
    target: str  # a destination, or "*"
    count: int | None
    detail: str  # e.g. the replay filter or the pause duration, as shown to operators

    def as_dict(self) -> dict:
        return {
            "ts": self.ts,
            "actor": self.actor,
            "action": self.action,
            "target": self.target,
            "count": self.count,
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class ReplayFilter:
    destination: str | None = None
    ids: tuple[str, ...] = ()
    since: float | None = None  # on the time relay received the event
    until: float | None = None


class Queue(Protocol):
    """The data path: events in (intake), deliveries claimed and finished (dispatchers,
    outcomes, the pull API), dead ones replayed."""

    @property
    def queued_events(self) -> int:
        """Events waiting for the next group commit (ingest sheds load beyond a limit)."""

    async def append(self, events: list[NewEvent]) -> list[bool]:
        """Commit events and their pending deliveries; say for each whether it was stored.

        Returns only after the commit (the caller's 2xx depends on it). An event whose `id`
        is already stored (before, or earlier in the same call) is skipped with its
        deliveries: ingestion is idempotent, and the counters count what was stored.
        """

    async def claim(
        self,
        destination: str,
        limit: int,
        lease_s: float,
        event_types: Collection[str] | None = None,
    ) -> list[Claimed]:
        """Lease up to `limit` due deliveries of `destination`, oldest due first.

        With `event_types`, only deliveries of events of those types (the SOAP pull's
        `notificationTypes`); the others stay pending where they were.
        """

    async def ack(self, claims: list[Claimed], attempt: Attempt | None = None) -> None:
        """Mark claimed deliveries delivered (those whose lease still matches).

        With `attempt`, record it in each delivery's history (outcome `delivered`), in the
        same transaction; ATTEMPTS_KEPT per delivery are kept.
        """

    async def retry(
        self, claims: list[tuple[Claimed, float]], error: str | None, attempt: Attempt | None = None
    ) -> None:
        """Return claimed deliveries to pending, each due again at its own time."""

    async def dead(
        self, claims: list[Claimed], error: str | None, attempt: Attempt | None = None
    ) -> None:
        """Give up on claimed deliveries; they stay until retention and can be replayed."""

    async def release(self, claims: list[Claimed]) -> None:
        """Hand back claims that were never attempted: pending and due now, attempts as before."""

    async def ack_lease(self, destination: str, lease: int) -> list[str]:
        """Pull API: mark every delivery still held under `lease` delivered; return event ids.
        In the same commit, add the batch to its destination's minute (`ack_history`)."""

    async def release_leases(self, keep: list[str]) -> int:
        """Start-up: make every delivery a previous run had claimed due now, except those of
        the destinations in `keep` (pull leases: their client may still ack them)."""

    async def replay(
        self, where: ReplayFilter, dry_run: bool = False, rate: float | None = None
    ) -> list[str]:
        """Make matching dead deliveries pending again with attempts reset; return event ids.

        With `rate` (events/s), the n-th replayed delivery is due n/rate seconds from now,
        so a recovering receiver gets them spread out, oldest first.
        """

    async def next_due(self, destination: str) -> float | None:
        """When the earliest pending delivery of `destination` is due (None: nothing pending)."""


class Control(Protocol):
    """The read and control side: counts, an event's story, dead pages, attempts, the audit
    trail, pauses and flushes, retention, and which node this is and what it leads
    (admin API, console, CLI, the daemon's upkeep)."""

    node: str | None  # this process's name in a cluster sharing the queue (None: SQLite)

    async def lead(self, name: str) -> bool:
        """Whether this node runs the cluster-wide singleton `name` (retention, a periodic
        destination's rounds): one node of a PostgreSQL cluster at a time; SQLite always."""

    async def check_writable(self) -> None:
        """Readiness: prove a write commits (and change nothing); raise StorageUnavailable."""

    async def stats(self) -> Stats:
        """Counts from counters the store keeps as it writes: no scan of big tables."""

    async def dead_list(
        self,
        destination: str | None,
        after: int,
        limit: int,
        since: float | None = None,
        until: float | None = None,
    ) -> list[DeadDelivery]:
        """Dead deliveries by id after `after` (keyset pages); since/until on received time."""

    async def event(self, event_id: str) -> EventDetail | None:
        """One event, each delivery of it and their recorded attempts (`relay show`)."""

    async def attempt_minutes(self, destination: str, since: float) -> list[tuple[int, bool, int]]:
        """(Unix minute, delivered?, attempts) of `destination` since `since`: the console's
        live picture rebuilt at start from the same history "Recent attempts" shows."""

    async def ack_history(self, destination: str, since: float) -> AckHistory:
        """A pull destination's acked events per minute since `since`, and its newest ack
        batch however old: its live picture rebuilt at start (pull acks write no attempts)."""

    async def attempts(self, where: AttemptFilter, limit: int) -> list[AttemptRecord]:
        """Recorded attempts, newest first (the console's destination page)."""

    async def oldest_pending(
        self, event_types: tuple[str, ...], older_than: float
    ) -> dict[str, tuple[int, float]]:
        """Per destination: (how many, oldest received_at) of live deliveries of events of
        these types received before `older_than` (the console's unsubscribe deadline)."""

    async def audit(self, entry: AuditEntry) -> None: ...

    async def audit_log(self, limit: int) -> list[AuditEntry]:
        """The newest entries first."""

    async def pause(self, destination: str, until: float | None) -> None: ...

    async def resume(self, destination: str) -> None: ...

    async def request_flush(self, destination: str) -> None:
        """Ask the running daemon to send `destination`'s digest or upload now (`relay flush`)."""

    async def take_flushes(self) -> list[str]:
        """The destinations a flush was asked for since the last call; each request is taken
        once (the daemon's upkeep polls this every second)."""

    async def paused(self) -> dict[str, float | None]:
        """Paused destinations and when each resumes by itself (None: until resumed)."""

    async def purge(self, older_than: float) -> int:
        """Delete finished and dead deliveries, and events with none left, older than this."""


class Store(Queue, Control, Protocol):
    """Both sides, as each backend (SQLite, PostgreSQL) implements them."""

    async def open(self) -> None:
        """Create or migrate the schema; refuse a schema newer than this code."""

    async def close(self) -> None:
        """Finish the group commit in progress, then close."""
