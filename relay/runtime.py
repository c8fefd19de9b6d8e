"""What a running relay holds: config, store, intake, dispatchers, outcomes, dispatch log.

The daemon holds one `Runtime`; the app factory builds the route surfaces from its parts.
It owns the dispatchers and brings them in line with a new config on reload: new
destinations start, removed ones stop (their backlog stays in the store), changed ones
restart with the new settings; and it swaps the config and signer the routes read
(`Current`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from .config import Config, PullDestination, PushDestination
from .current import Current
from .dispatch.activity import MINUTES, Activity, LastAttempt, ack_summary
from .dispatch.dispatcher import Dispatcher
from .dispatch.factory import make_dispatcher
from .dispatch.log import DispatchLog
from .dispatch.periodic import PeriodicDispatcher
from .dispatch.wakeups import Wakeups
from .domain.bots import BotDetector
from .domain.routing import Router
from .domain.tokens import Signer
from .intake import Intake
from .metrics import Metrics
from .outcomes import Outcomes
from .store import AttemptFilter, Store

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


def signer(config: Config) -> Signer:
    """The tracking-link signer of `config`: its secrets and public URL."""
    return Signer(tracking_secrets(config), config.server.public_url)


class Runtime:
    """The daemon builds the parts (store, dispatch log, metrics, wake-ups, intake) and
    hands them over here; this owns the dispatchers, pauses, signer and bot memory."""

    def __init__(
        self,
        config: Config,
        store: Store,
        dispatch_log: DispatchLog,
        metrics: Metrics,
        wakeups: Wakeups,
        intake: Intake,
    ) -> None:
        self.store = store
        self.log = dispatch_log
        self.metrics = metrics  # per runtime, not global: tests run many in one process
        self.wakeups = wakeups
        self.intake = intake  # every event taken in: ingest, tracking, the spool's drain
        self.dispatchers: dict[str, Dispatcher] = wakeups.dispatchers
        self.paused: dict[str, float | None] = {}
        # What the routes and the guard read per request; `apply` swaps it.
        self.current = Current(config, signer(config))
        self.bots = BotDetector(memory_s=config.tracking.bot_memory_s)
        self.started_at = time.time()
        # Every outcome, push or pull, is settled here: store, dispatch log, metrics, console.
        self.outcomes = Outcomes(store, dispatch_log, [metrics])

    @property
    def activities(self) -> dict[str, Activity]:
        """The console's live picture per destination, kept by the outcomes."""
        return self.outcomes.activities

    @property
    def ingested(self) -> Counter[str]:
        """Events stored, by source."""
        return self.intake.ingested

    def wake(self, destinations: Iterable[str]) -> None:
        self.wakeups.wake(destinations)

    async def recover(self, destinations: Iterable[str]) -> None:
        """After an operator's replay: each destination sends now, an open circuit probes."""
        for name in destinations:
            if (d := self.dispatchers.get(name)) is not None:
                d.recover()

    @property
    def config(self) -> Config:
        """The config in force: the one `Current` holds, so the two cannot disagree."""
        return self.current.config

    def is_paused(self, destination: str) -> bool:
        return destination in self.paused

    async def restore_pictures(self) -> None:
        """Rebuild every destination's live picture from the store (the last hour's attempts
        or acks, the last success and failure) and note every backlog now, so the forecast's
        warm-up counts from start. The daemon does this before it listens, so its very first
        answer (console, admin API) already shows them."""
        stats = await self.store.stats()
        now = time.time()
        for dest in self.config.destinations.values():
            if isinstance(dest, PullDestination):
                activity = self.outcomes.activity(dest.name)
                await self._restore_acks(dest.name, activity)
            else:
                activity = self.outcomes.restart(dest.name)
                await self._restore(dest.name, activity)
            s = stats.destinations.get(dest.name)
            activity.trend(s.pending if s else 0, now)

    async def start_dispatchers(self) -> None:
        """Start a dispatcher per push destination, on the pictures `restore_pictures` made."""
        for dest in self.config.destinations.values():
            if not isinstance(dest, PullDestination):
                await self._start(dest, restore=False)

    async def _start(self, dest: PushDestination, restore: bool = True) -> Dispatcher:
        dispatcher = make_dispatcher(dest, self.store, self.outcomes)
        dispatcher.paused = dest.name in self.paused
        if restore:  # added or changed by a reload: a fresh picture and tally, from the store
            await self._restore(dest.name, self.outcomes.restart(dest.name))
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

    async def _restore_acks(self, name: str, activity: Activity) -> None:
        """A pull destination's last hour of acks and its newest ack batch, from the store.
        "Last pull" stays unknown until a client pulls: the store keeps no lease times."""
        now = time.time()
        history = await self.store.ack_history(name, now - MINUTES * 60)
        last = None
        if history.last is not None:
            ts, n, batch = history.last
            last = LastAttempt(ts, None, None, ack_summary(n, batch))
        last_pull = activity.last_sent
        activity.restore([(m, True, n) for m, n in history.minutes], last, None, now)
        activity.last_sent = last_pull

    async def stop_dispatchers(self, grace_s: float = STOP_GRACE_S) -> None:
        await asyncio.gather(*(d.stop(grace_s) for d in self.dispatchers.values()))

    async def apply(self, config: Config) -> None:
        """Switch to a new config: routes apply to new events; dispatchers follow destinations."""
        old = self.dispatchers
        keep = {n: d for n, d in old.items() if config.destinations.get(n) == d.dest}
        stopping = [d for n, d in old.items() if n not in keep]
        await asyncio.gather(*(d.stop(STOP_GRACE_S) for d in stopping))
        for d in stopping:  # their counts leave the shutdown line with them
            self.outcomes.tallies.pop(d.name, None)
        self.current.config = config
        self.intake.reroute(Router(config.routes, config.destinations))
        self.current.signer = signer(config)
        for name in [n for n in self.dispatchers if n not in keep]:  # the same dict as wakeups'
            del self.dispatchers[name]
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
        for tally in self.outcomes.tallies.values():  # push and pull (an ack is delivered)
            counts.update(tally)
        return {
            "ingested": sum(self.intake.ingested.values()),
            "duplicates": sum(self.intake.duplicates.values()),
            "delivered": counts["delivered"],
            "retried": counts["retry"],
            "dead": counts["dead"],
        }
