"""The pull destination: a client leases a batch of events and acks it to remove them.

The one code path of every pull dialect (the JSON pull API and SOAP). The claim is the
store's; what a lease and an ack mean (the dispatch-log line, the console's "last pull",
the metrics, an ack counted as delivered) is settled by `Outcomes`, as for a push.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import TYPE_CHECKING

from ..config import PullDestination
from ..models import Claimed

if TYPE_CHECKING:
    from ..outcomes import Outcomes
    from ..store import Queue


class Pull:
    """Lease and ack for pull clients, over the queue side of the store.

    `is_paused` is asked on every lease rather than given a set once: pauses change at run
    time (the console, the CLI, a timed pause running out).
    """

    def __init__(self, queue: Queue, outcomes: Outcomes, is_paused: Callable[[str], bool]) -> None:
        self._queue = queue
        self._outcomes = outcomes
        self._is_paused = is_paused

    async def lease(
        self, dest: PullDestination, limit: int, event_types: Collection[str] | None = None
    ) -> list[Claimed] | None:
        """Lease up to `limit` events for a pull client (None: the destination is paused)."""
        if self._is_paused(dest.name):
            return None
        claims = await self._queue.claim(dest.name, limit, dest.lease_s, event_types)
        self._outcomes.leased(dest.name, claims)
        return claims

    async def ack(self, dest: PullDestination, batch_id: int) -> list[str]:
        """Mark a leased batch read: its events leave the queue; returns their ids ([]:
        unknown batch, already acked, or its lease ran out and it was leased again)."""
        return await self._outcomes.acked(dest.name, batch_id)
