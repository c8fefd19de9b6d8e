"""The pull destination: a client leases a batch of events and acks it to remove them.

The one code path of every pull dialect (the JSON pull API and SOAP). The claim is the
store's; what a lease and an ack mean (the dispatch-log line, the console's "last pull",
the metrics, an ack counted as delivered) is settled by `Outcomes`, as for a push.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

from ..config import PullDestination
from ..models import Claimed

if TYPE_CHECKING:
    from ..runtime import Runtime


async def lease_batch(
    runtime: Runtime, dest: PullDestination, limit: int, event_types: Collection[str] | None = None
) -> list[Claimed] | None:
    """Lease up to `limit` events for a pull client (None: the destination is paused)."""
    if runtime.is_paused(dest.name):
        return None
    claims = await runtime.store.claim(dest.name, limit, dest.lease_s, event_types)
    runtime.outcomes.leased(dest.name, claims)
    return claims


async def ack_batch(runtime: Runtime, dest: PullDestination, batch_id: int) -> list[str]:
    """Mark a leased batch read: its events leave the queue; returns their ids ([]: unknown
    batch, already acked, or its lease ran out and it was leased again)."""
    return await runtime.outcomes.acked(dest.name, batch_id)
