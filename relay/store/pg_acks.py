"""The PostgreSQL store's outcome verbs: ack (= DELETE, batched per process), retry, dead.

Each is one statement (pg_sql.py): fenced on the lease token, recording the attempt and
the counter deltas with the move. Acks from every dispatcher of this node are queued and
flushed together, one DELETE per flush.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ..models import Attempt, Claimed
from .base import StorageUnavailable
from .pg_base import _RETRY
from .pg_sql import ACK, RETRY
from .pg_sql import DEAD as DEAD_SQL

ACK_BATCH = 500  # at most this many acks in one DELETE
ACK_RETRY_S = 30.0  # how long a flush of acks keeps trying while the database is away


class PostgresAcks:
    _closing: bool
    _acks: list[tuple[list[Claimed], Attempt | None, asyncio.Future]]
    _ack_wakeup: asyncio.Event
    _acker: asyncio.Task | None

    async def _val(self, sql: str, *args: Any) -> Any:
        raise NotImplementedError

    async def ack(self, claims: list[Claimed], attempt: Attempt | None = None) -> None:
        """Queued for the ack flusher: one DELETE for every ack of this node since its last
        flush (group commit, as for appends); returns after that commit."""
        if not claims:
            return
        if self._closing or self._acker is None:
            raise StorageUnavailable("store is closed")
        future = asyncio.get_running_loop().create_future()
        self._acks.append((claims, attempt, future))
        self._ack_wakeup.set()
        await future

    async def _ack_loop(self) -> None:
        """Flush queued acks: as soon as the previous flush is done, at most ACK_BATCH ids
        per statement (so under load a flush follows the last within one round trip, well
        inside 50 ms), and whatever is left at close."""
        while True:
            if not self._acks:
                if self._closing:
                    return
                self._ack_wakeup.clear()
                await self._ack_wakeup.wait()
                continue
            taken, size = 0, 0
            while taken < len(self._acks) and size < ACK_BATCH:
                size += len(self._acks[taken][0])
                taken += 1
            batch, self._acks = self._acks[:taken], self._acks[taken:]
            rows = [(c, None, a) for claims, a, _ in batch for c in claims]
            error = await self._flush_acks(rows)
            if error is not None:
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            for _, _, future in batch:
                if not future.done():
                    future.set_result(None)

    async def _flush_acks(
        self, rows: list[tuple[Claimed, float | None, Attempt | None]]
    ) -> Exception | None:
        """One DELETE for the batch. While the database is away, try again every 0.5 s for
        up to ACK_RETRY_S (the dispatcher's slots wait meanwhile): the sends happened, and
        a lost ack would send them again when their leases run out."""
        give_up = time.monotonic() + ACK_RETRY_S
        while True:
            try:
                await self._outcome(ACK, rows, None)
                return None
            except StorageUnavailable as exc:
                if self._closing or time.monotonic() > give_up:
                    return exc
                await asyncio.sleep(0.5)
            except Exception as exc:
                return exc

    async def _outcome(
        self,
        sql: str,
        rows: list[tuple[Claimed, float | None, Attempt | None]],
        error: str | None,
    ) -> None:
        """Run ACK, RETRY or DEAD (pg_sql.py) for (claim, due_at, attempt) rows."""
        if not rows:
            return
        columns: list[list[Any]] = [[] for _ in range(11)]
        for c, due, a in rows:
            values = (
                c.delivery_id,
                c.lease,
                due,
                a is not None,
                a.ts if a else None,
                a.status if a else None,
                a.ms if a else None,
                a.error if a else None,
                a.response if a else None,
                c.event_id,
                c.event_type,
            )
            for column, value in zip(columns, values, strict=True):
                column.append(value)
        for attempt in range(3):
            try:
                await self._val(sql, *columns, *([] if sql is ACK else [error]))
                return
            except _RETRY:
                if attempt == 2:
                    raise

    async def retry(
        self, claims: list[tuple[Claimed, float]], error: str | None, attempt: Attempt | None = None
    ) -> None:
        await self._outcome(RETRY, [(c, due, attempt) for c, due in claims], error)

    async def dead(
        self, claims: list[Claimed], error: str | None, attempt: Attempt | None = None
    ) -> None:
        await self._outcome(DEAD_SQL, [(c, None, attempt) for c in claims], error)
