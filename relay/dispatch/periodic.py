"""Periodic dispatch: email digests and ftp/sftp uploads, one message or file per period.

A `PeriodicDispatcher` is a `Dispatcher` whose loop runs in rounds instead of per event.
Periods are aligned to the Unix epoch in UTC (`1h` on the hour, `1d` at midnight), so a
restart does not shift them. A round claims everything due, in chunks of the sender's
`batch_size` (one message or file each), sends them one after another and records each
event's outcome through `Dispatcher._deliver`, so the dispatch log, acks and the retry
policy work exactly as for webhooks. A round runs when:

- a period has ended and something became due before it (this also catches up, right after
  a start, on events a stopped relay did not send in their own period);
- `relay flush DEST` asked for one (`flush()`), and something is due;
- a failed round's retry is due: a failure retries with the destination's backoff,
  not a period later. A round that fails stops there; the rest waits for that retry.
"""

from __future__ import annotations

import logging
import time

from ..config.destinations import EmailDestination, FtpDestination, SftpDestination
from ..destinations.base import Sender
from ..destinations.logfile import period_start
from ..models import Claimed, Outcome
from ..outcomes import Decision, Settles
from ..store import Store
from .dispatcher import IDLE_POLL_S, Dispatcher

log = logging.getLogger("relay.dispatch")

CLAIM_CHUNK = 5000  # rows per claim transaction: a 100k-event file doesn't hold the writer long


class PeriodicDispatcher(Dispatcher):
    """Same surface as `Dispatcher` (start, stop, wake, paused, running, counts), plus `flush`."""

    def __init__(
        self,
        dest: EmailDestination | FtpDestination | SftpDestination,
        store: Store,
        sender: Sender,
        outcomes: Settles,
    ) -> None:
        super().__init__(dest, store, sender, outcomes)
        self.store: Store = store  # a round also asks who leads and hands flushes on
        self.period_s = dest.period_s
        self.rounds = 0
        self._flush = False
        self._flushes = 0  # flush() calls so far: one made during a query is not lost
        self._retry_at: float | None = None  # set by a failed round: when to try again
        self._scheduled: list[float] = []  # retry times decided during the current round

    def wake(self) -> None:
        """New events wait for the end of the period: ingestion does not start a round."""

    def flush(self) -> None:
        """Send what is due now instead of at the end of the period (`relay flush`)."""
        self._flush = True
        self._flushes += 1
        self._wake.set()

    async def _loop(self) -> None:
        while not self._stopping:
            self._wake.clear()
            try:
                if not self.paused and await self._round_due():
                    # One node of a cluster builds each message or file of a period.
                    if await self.store.lead(f"periodic:{self.name}"):
                        await self._round()
                        continue
                    if self._flush:  # `relay flush` was taken here: hand it to the leader
                        self._flush = False
                        await self.store.request_flush(self.name)
            except Exception:  # the store is briefly unavailable: log, try again shortly
                log.exception("periodic round failed for %s; retrying shortly", self.name)
            wait = IDLE_POLL_S
            if self._retry_at is not None:  # a backoff shorter than the poll: keep it
                wait = min(wait, max(0.0, self._retry_at - time.time()))
            await self._sleep(wait, clear=False)

    async def _round_due(self) -> bool:
        now = time.time()
        asked = self._flushes
        due = await self.store.next_due(self.name)
        if due is None or due > now:
            # Nothing to send: the flush is done, unless it came while the store answered
            # (the events it is for may have been committed after the query read).
            if self._flushes == asked:
                self._flush = False
            return False
        if self._flush:
            return True
        if self._retry_at is not None:
            return now >= self._retry_at
        return due < period_start(now, self.period_s)

    async def _round(self) -> None:
        self._flush = False
        self._retry_at = None
        self._scheduled = []
        size = self.sender.batch_size
        sent = 0
        while not self._stopping and not self.paused:
            claims = await self._claim_upto(size)
            if not claims:
                break
            result = await self._deliver(claims)
            if result.outcome is not Outcome.DELIVERED:
                # The latest, not the earliest: jitter spreads the retry times, and the
                # retry should take every event of the failed message together again.
                self._retry_at = max(self._scheduled, default=None)
                log.warning(
                    "periodic send failed destination=%s events=%d error=%s",
                    self.name,
                    len(claims),
                    result.error,
                )
                break
            sent += len(claims)
            if len(claims) < size:
                break
        self.rounds += 1
        if sent:
            log.info("periodic round destination=%s delivered=%d", self.name, sent)

    async def _claim_upto(self, size: int) -> list[Claimed]:
        """Up to `size` due deliveries, in claims of at most CLAIM_CHUNK rows."""
        batch: list[Claimed] = []
        while len(batch) < size:
            want = min(CLAIM_CHUNK, size - len(batch))
            got = await self.store.claim(self.name, want, self.dest.lease_s)
            batch += got
            if len(got) < want:
                break
        return batch

    def _decided(self, decided: list[Decision]) -> None:
        """The retry times decided in this round: the next round runs at the earliest."""
        self._scheduled += [at for _, outcome, at in decided if outcome == "retry" and at]
