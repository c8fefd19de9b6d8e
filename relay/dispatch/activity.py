"""What each destination has been doing lately, kept in memory for the console.

Per destination: delivered and failed counts in one-minute buckets over the last hour
(failure rates, the sparkline, the drain forecast), the last success and the last
failure. The dispatcher updates it as it records outcomes; the console reads it without
touching the store. At start it is rebuilt from the stored attempt history (`restore`), so
a restart does not blank the figures the same page's "Recent attempts" still lists; a pull
destination's, whose acks write no attempts, from the acks the store tallies per minute.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

MINUTES = 60


@dataclass(slots=True)
class LastAttempt:
    ts: float
    status: int | None
    error: str | None
    response: str | None

    def as_dict(self) -> dict:
        return {
            "ts": self.ts,
            "status": self.status,
            "error": self.error,
            "response": self.response,
        }


def ack_summary(n: int, batch: int) -> str:
    """What a pull destination's "last success" says: the same live and after a restart."""
    return f"acked {n} events (batch {batch})"


@dataclass(slots=True)
class Activity:
    delivered: list[int] = field(default_factory=lambda: [0] * MINUTES)
    failed: list[int] = field(default_factory=lambda: [0] * MINUTES)
    minute: int = 0  # the bucket index's minute (Unix minutes) of the newest bucket
    last_success: LastAttempt | None = None
    last_failure: LastAttempt | None = None
    last_sent: float | None = None  # any outcome: a pull, a file, a request
    # (time, pending) as the console saw it, one every few seconds over the last minutes:
    # the backlog's trend, whatever drives it (ingest, retries, replays).
    backlog: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=64))

    def record(
        self,
        ok: bool,
        n: int,
        status: int | None,
        error: str | None,
        response: str | None,
        now: float | None = None,
    ) -> None:
        now = time.time() if now is None else now
        self._roll(now)
        (self.delivered if ok else self.failed)[-1] += n
        last = LastAttempt(now, status, error, response)
        if ok:
            self.last_success = last
        else:
            self.last_failure = last
        self.last_sent = now

    def restore(
        self,
        minutes: list[tuple[int, bool, int]],
        success: LastAttempt | None,
        failure: LastAttempt | None,
        now: float,
    ) -> None:
        """Fold in stored attempts: (Unix minute, delivered?, n) and the last of each kind."""
        self._roll(now)
        for minute, ok, n in minutes:
            age = self.minute - minute
            if 0 <= age < MINUTES:
                (self.delivered if ok else self.failed)[MINUTES - 1 - age] += n
        self.last_success = success or self.last_success
        self.last_failure = failure or self.last_failure
        stamps = [a.ts for a in (success, failure) if a is not None]
        if stamps and self.last_sent is None:
            self.last_sent = max(stamps)

    def _roll(self, now: float) -> None:
        minute = int(now // 60)
        shift = min(MINUTES, minute - self.minute)
        if shift > 0:
            self.delivered = self.delivered[shift:] + [0] * shift
            self.failed = self.failed[shift:] + [0] * shift
            self.minute = minute

    def series(self, now: float | None = None) -> tuple[list[int], list[int]]:
        """(delivered, failed) per minute, oldest first, the current minute last."""
        self._roll(time.time() if now is None else now)
        return list(self.delivered), list(self.failed)

    def failure_rate(self, minutes: int, now: float | None = None) -> float | None:
        """Failed / all attempts over the last `minutes` (None: no attempts)."""
        delivered, failed = self.series(now)
        ok, bad = sum(delivered[-minutes:]), sum(failed[-minutes:])
        return None if ok + bad == 0 else round(bad / (ok + bad), 4)

    def trend(self, pending: int, now: float | None = None) -> float | None:
        """Note the backlog now; return its change per minute over the last ≤5 minutes
        (None until two samples at least 10 s apart exist)."""
        now = time.time() if now is None else now
        if not self.backlog or now - self.backlog[-1][0] >= 5:
            self.backlog.append((now, pending))
        while len(self.backlog) > 2 and now - self.backlog[0][0] > 300:
            self.backlog.popleft()
        t0, p0 = self.backlog[0]
        if now - t0 < 10:
            return None
        return (pending - p0) / (now - t0) * 60
