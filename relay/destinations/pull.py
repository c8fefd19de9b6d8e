"""The pull destination: a client leases a batch of events and acks it to remove them.

The one code path of every pull dialect (the JSON pull API and SOAP): the claim, the
dispatch-log line and the console's "last pull" are the same whichever way the client asked.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from typing import TYPE_CHECKING

from ..config import PullDestination
from ..dispatch.activity import Activity
from ..dispatch.log import iso_ms
from ..models import Claimed

if TYPE_CHECKING:
    from ..runtime import Runtime


def batch_line(
    destination: str, outcome: str, event_ids: list[str], claims: list[Claimed] = ()
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


async def lease_batch(
    runtime: Runtime, dest: PullDestination, limit: int, event_types: Collection[str] | None = None
) -> list[Claimed] | None:
    """Lease up to `limit` events for a pull client (None: the destination is paused).

    The one code path of every pull dialect (JSON and SOAP): the claim, the dispatch-log
    line and the console's "last pull" are the same whichever way the client asked.
    """
    if runtime.is_paused(dest.name):
        return None
    claims = await runtime.store.claim(dest.name, limit, dest.lease_s, event_types)
    # The console's "last pull" (any poll, empty or not); acks count as deliveries.
    runtime.pull_activity.setdefault(dest.name, Activity()).last_sent = time.time()
    if claims:
        runtime.log.write([batch_line(dest.name, "leased", [c.event_id for c in claims], claims)])
    return claims


async def ack_batch(runtime: Runtime, dest: PullDestination, batch_id: int) -> list[str]:
    """Mark a leased batch read: its events leave the queue; returns their ids ([]: unknown
    batch, already acked, or its lease ran out and it was leased again)."""
    ids = await runtime.store.ack_lease(dest.name, batch_id)
    if not ids:
        return ids
    runtime.log.write([batch_line(dest.name, "acked", ids)])
    runtime.acked(dest.name, len(ids))
    activity = runtime.pull_activity.setdefault(dest.name, Activity())
    last_pull = activity.last_sent  # an ack is not a pull: keep "last pull" as it was
    activity.record(True, len(ids), None, None, f"acked {len(ids)} events (batch {batch_id})")
    activity.last_sent = last_pull
    return ids


