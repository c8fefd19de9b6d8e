"""Settling deliveries: the one place an outcome is recorded.

A push send (any destination type) or a pull client's lease and ack ends here. `Outcomes`
decides what a failure means (retry when, or dead: `backoff.next_attempt_at`), tells the
store with the attempt (ack, retry, dead in one group commit), writes the dispatch-log
lines, and tells its listeners, all given to its constructor: the metrics, the console's
live picture per destination (`Activity`) and the per-destination tallies the shutdown
line sums. Nothing else records an outcome, so the five sinks cannot disagree.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from typing import Protocol

from .config import RetryPolicy
from .dispatch.activity import Activity, ack_summary
from .dispatch.backoff import next_attempt_at
from .dispatch.log import DispatchLog, attempt_line, iso_ms
from .models import RESPONSE_CHARS, Attempt, Claimed, Outcome, Result

# (claim, "delivered" | "retry" | "dead", when it is due again for a retry)
Decision = tuple[Claimed, str, float | None]


class QueueVerbs(Protocol):
    """The store's verbs that finish a claim (`Store` has them all)."""

    async def ack(self, claims: list[Claimed], attempt: Attempt | None = None) -> None: ...

    async def retry(
        self, claims: list[tuple[Claimed, float]], error: str | None, attempt: Attempt | None = None
    ) -> None: ...

    async def dead(
        self, claims: list[Claimed], error: str | None, attempt: Attempt | None = None
    ) -> None: ...

    async def ack_lease(self, destination: str, lease: int) -> list[str]: ...


class OutcomeListener(Protocol):
    """Told once per settled batch (the metrics): counts by outcome, and the delivered
    claims for the received-to-delivered latency."""

    def settled(self, destination: str, tally: dict[str, int]) -> None: ...

    def delivered(self, destination: str, claims: list[Claimed], now: float) -> None: ...


class Settles(Protocol):
    """What a dispatcher needs from `Outcomes` (a test gives it a fake)."""

    async def settle(
        self,
        destination: str,
        policy: RetryPolicy,
        claims: list[Claimed],
        result: Result,
        ms: float,
    ) -> list[Decision]: ...


class Outcomes:
    def __init__(
        self,
        store: QueueVerbs,
        log: DispatchLog | None,
        listeners: Sequence[OutcomeListener] = (),
    ) -> None:
        self.store = store
        self.log = log
        self.listeners = tuple(listeners)
        self.activities: dict[str, Activity] = {}  # the console's live picture, per destination
        self.tallies: dict[str, Counter[str]] = {}  # delivered / retry / dead, per destination

    def activity(self, destination: str) -> Activity:
        activity = self.activities.get(destination)
        if activity is None:
            activity = self.activities[destination] = Activity()
        return activity

    def restart(self, destination: str) -> Activity:
        """A dispatcher (re)starts: its live picture and tally start over (the caller folds
        the stored history back into the new picture)."""
        self.tallies[destination] = Counter()
        activity = self.activities[destination] = Activity()
        return activity

    async def settle(
        self,
        destination: str,
        policy: RetryPolicy,
        claims: list[Claimed],
        result: Result,
        ms: float,
    ) -> list[Decision]:
        """Record one send of `claims`: store verbs with the attempt, log, listeners."""
        now = time.time()
        delivered = result.outcome is Outcome.DELIVERED
        response = result.response[:RESPONSE_CHARS] if result.response else None
        attempt = Attempt(destination, now, result.status, ms, result.error, response)
        self.activity(destination).record(
            delivered, len(claims), result.status, result.error, response, now
        )
        decided: list[Decision]
        if delivered:
            await self.store.ack(claims, attempt)
            decided = [(c, "delivered", None) for c in claims]
            for listener in self.listeners:
                listener.delivered(destination, claims, now)
        else:
            decided = [(c, *_after_failure(policy, c, result, now)) for c in claims]
            retry = [(c, at) for c, o, at in decided if o == "retry" and at is not None]
            dead = [c for c, o, _ in decided if o == "dead"]
            await asyncio.gather(  # both in one group commit
                self.store.retry(retry, result.error, attempt),
                self.store.dead(dead, result.error, attempt),
            )
        if self.log is not None:
            self.log.write([_line(destination, now, c, o, result, ms, at) for c, o, at in decided])
        tally: dict[str, int] = {}
        for _, outcome, _ in decided:
            tally[outcome] = tally.get(outcome, 0) + 1
        self._told(destination, tally)
        return decided

    def leased(self, destination: str, claims: list[Claimed]) -> None:
        """A pull client polled: the console's "last pull" (empty or not); a lease line."""
        self.activity(destination).last_sent = time.time()
        if claims:
            ids = [c.event_id for c in claims]
            self._write_batch(destination, "leased", ids, claims)
            self._told(destination, {"leased": len(claims)})

    async def acked(self, destination: str, lease: int) -> list[str]:
        """A pull client acked a batch: delivered, like a push's 2xx (empty: nothing held)."""
        ids = await self.store.ack_lease(destination, lease)
        if not ids:
            return ids
        self._write_batch(destination, "acked", ids)
        activity = self.activity(destination)
        last_pull = activity.last_sent  # an ack is not a pull: keep "last pull" as it was
        activity.record(True, len(ids), None, None, ack_summary(len(ids), lease))
        activity.last_sent = last_pull
        self._told(destination, {"delivered": len(ids)})
        return ids

    def _told(self, destination: str, tally: dict[str, int]) -> None:
        counts = self.tallies.get(destination)
        if counts is None:
            counts = self.tallies[destination] = Counter()
        counts.update(tally)
        for listener in self.listeners:
            listener.settled(destination, tally)

    def _write_batch(
        self, destination: str, outcome: str, ids: list[str], claims: list[Claimed] = ()
    ) -> None:
        if self.log is not None:
            self.log.write([batch_line(destination, outcome, ids, claims)])


def _after_failure(
    policy: RetryPolicy, c: Claimed, result: Result, now: float
) -> tuple[str, float | None]:
    if result.outcome is Outcome.RETRY:
        at = next_attempt_at(policy, c.attempts, c.created_at, now, result.retry_after_s)
        if at is not None:
            return "retry", at
    return "dead", None


def _line(
    destination: str, now: float, c: Claimed, outcome: str, r: Result, ms: float, at: float | None
) -> dict:
    error = None if outcome == "delivered" else r.error
    return attempt_line(
        now, c.event_id, c.event_type, destination, c.attempts, outcome, r.status, ms, error, at
    )


def batch_line(
    destination: str, outcome: str, event_ids: list[str], claims: Sequence[Claimed] = ()
) -> dict:
    """One dispatch-log line for a whole pull batch (the log format allows `count` + `event_ids`)."""
    return {
        "ts": iso_ms(time.time()),
        "event_id": None,
        "event_type": None,
        "destination": destination,
        "attempt": max((c.attempts for c in claims), default=None),
        "outcome": outcome,
        "status": None,
        "ms": None,
        "error": None,
        "next_attempt": None,
        "count": len(event_ids),
        "event_ids": event_ids,
    }
