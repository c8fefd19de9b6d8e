"""One dispatcher per push destination: claim due deliveries → send → record the outcome.

Each dispatcher has its own concurrency and its own backlog, so a receiver that is down
only slows its own queue. An idle dispatcher sleeps until ingestion wakes it, its next
delivery falls due, or `IDLE_POLL_S` passes (which is how it notices a replay or resume
made by the CLI in another process). A destination that keeps failing trips its circuit
breaker (`circuit.py`): nothing is sent, and no attempt spent, until a probe succeeds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import Protocol

from ..config import CircuitPolicy, PushDestination
from ..destinations.base import Sender
from ..models import Claimed, Outcome, Result
from ..outcomes import Decision, Settles
from .circuit import Circuit, CircuitState, Gate

log = logging.getLogger("relay.dispatch")

IDLE_POLL_S = 1.0


class Queue(Protocol):
    """The store's side a dispatcher works (`Store` has it; a unit test gives a fake)."""

    async def claim(self, destination: str, limit: int, lease_s: float) -> list[Claimed]: ...

    async def release(self, claims: list[Claimed]) -> None: ...

    async def next_due(self, destination: str) -> float | None: ...


NO_CIRCUIT = CircuitPolicy(failures=0)


class Dispatcher:
    """Claims, sends through its `sender`, and hands every result to `outcomes` to settle.

    Any push destination: the factory gives each its `concurrency` and `circuit` (email
    and periodic uploads have no circuit: failures = 0 turns breaking off; a periodic
    upload's rounds already stop at the first failure).
    """

    def __init__(
        self,
        dest: PushDestination,
        store: Queue,
        sender: Sender,
        outcomes: Settles,
        concurrency: int = 1,
        circuit: CircuitPolicy = NO_CIRCUIT,
    ) -> None:
        self.dest = dest
        self.name = dest.name
        self.store = store
        self.sender = sender
        self.outcomes = outcomes
        self.concurrency = concurrency
        self.paused = False
        self._wake = asyncio.Event()
        self._slot_free = asyncio.Event()
        self._inflight: set[asyncio.Task] = set()  # holding a concurrency slot (sending)
        self._tasks: set[asyncio.Task] = set()  # sending or recording the outcome
        self._ready: deque[Claimed] = deque()  # claimed, waiting for a free slot
        self._claiming: asyncio.Task[bool] | None = None  # the next round's claim
        self._stopping = False
        self._task: asyncio.Task | None = None
        self.circuit = Circuit(circuit)
        self.last_failed = False  # the most recent send failed

    def wake(self) -> None:
        self._wake.set()

    def recover(self) -> None:
        """An operator's replay or resume: an open circuit sends its probe now, and the
        backlog follows as soon as it succeeds (a replay's rate cap still spaces it)."""
        if self.circuit.probe_now():
            log.info("circuit probe requested destination=%s reason=operator", self.name)
        self._wake.set()

    async def start(self) -> None:
        await self.sender.start()
        self._task = asyncio.create_task(self._run(), name=f"dispatch:{self.name}")

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def state(self) -> str:
        """For the console and stats: paused, circuit_open, failing or ok."""
        if self.paused:
            return "paused"
        if self.circuit.is_open:
            return "circuit_open"
        return "failing" if self.last_failed else "ok"

    async def stop(self, grace_s: float) -> None:
        """Stop claiming, give sends in flight `grace_s` to finish, then cancel them.

        A cancelled send stays leased in the store; the next start makes it pending again.
        """
        self._stopping = True
        self._wake.set()
        self._slot_free.set()
        if self._task is not None:
            await asyncio.wait([self._task], timeout=grace_s)
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=grace_s)
        for task in [self._task, *self._tasks]:
            if task is not None and not task.done():
                task.cancel()
        await asyncio.gather(*(t for t in [self._task, *self._tasks] if t), return_exceptions=True)
        await self.sender.close()

    async def _run(self) -> None:
        try:
            while not self._stopping:
                try:
                    await self._loop()
                except Exception:  # the store is briefly away: never end the dispatcher
                    log.exception("dispatcher %s failed; resuming shortly", self.name)
                    await self._sleep(IDLE_POLL_S)
        finally:
            if self._claiming is not None:  # let a claim in flight land, then hand it back
                with contextlib.suppress(Exception):
                    await self._claiming
            if self._ready:  # claimed but never sent: hand them back untouched
                await self.store.release(list(self._ready))
                self._ready.clear()

    async def _loop(self) -> None:
        concurrency, size = self.concurrency, self.sender.batch_size
        while not self._stopping:
            gate = self.circuit.gate(time.monotonic())
            if self.paused or gate is Gate.WAIT:
                await self._hold()
                continue
            free = concurrency - len(self._inflight)
            if free > 0 and gate is Gate.PROBE:
                await self._probe()
                continue
            while free > 0 and self._ready:
                self._launch([self._ready.popleft() for _ in range(min(size, len(self._ready)))])
                free -= 1
            if self._claiming is not None and self._claiming.done():
                found = self._claiming.result()
                self._claiming = None
                if not found and free > 0:  # nothing due, and a slot is idle: wait for work
                    await self._idle()
                    continue
            # Claim the next round while this one is sending, so a slot that frees up finds
            # work ready instead of waiting for a claim's commit.
            if self._claiming is None and len(self._ready) < concurrency * size:
                self._claiming = asyncio.create_task(self._claim(2 * concurrency * size))
            # No await since `free` was computed: a send finishing now still sets this after.
            self._slot_free.clear()
            await self._slot_free.wait()

    async def _settle_claim(self) -> None:
        """Let the background claim land in the ready queue before deciding what to send."""
        if self._claiming is not None:
            await self._claiming
            self._claiming = None

    async def _claim(self, limit: int) -> bool:
        """Top the ready queue up to `limit`; say whether anything was due. Wakes the loop."""
        try:
            want = limit - len(self._ready)
            if want > 0:
                self._ready.extend(await self.store.claim(self.name, want, self.dest.lease_s))
            return bool(self._ready)
        except Exception:
            log.exception("claim failed for %s; retrying shortly", self.name)
            await self._sleep(IDLE_POLL_S)
            return False
        finally:
            self._slot_free.set()

    def _launch(self, batch: list[Claimed], probe: bool = False) -> None:
        task = asyncio.create_task(self._deliver(batch, probe))
        self._inflight.add(task)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    async def _hold(self) -> None:
        """Paused or circuit open: hand back unsent claims untouched (no attempt is spent), wait."""
        await self._settle_claim()
        if self._ready:
            await self.store.release(list(self._ready))
            self._ready.clear()
        wait = IDLE_POLL_S
        if not self.paused and self.circuit.state is CircuitState.OPEN:
            wait = min(wait, self.circuit.wait_s(time.monotonic()))
        await self._sleep(wait)

    async def _probe(self) -> None:
        """The circuit's cooldown is over: send one request; its outcome closes or reopens it."""
        await self._settle_claim()
        size = self.sender.batch_size
        if not self._ready and not await self._claim(size):
            await self._idle()
            return  # nothing due: the next due delivery is the probe
        batch = [self._ready.popleft() for _ in range(min(size, len(self._ready)))]
        if self._ready:
            await self.store.release(list(self._ready))
            self._ready.clear()
        self.circuit.probe_sent()
        log.info("circuit probe destination=%s", self.name)
        self._launch(batch, probe=True)

    def _free_slot(self, task: asyncio.Task | None) -> None:
        if task in self._inflight:
            self._inflight.discard(task)
            self._slot_free.set()

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        self._free_slot(task)
        # A failed send may have scheduled a retry sooner than the idle loop's wake-up.
        self._wake.set()

    async def _idle(self) -> None:
        # Clear before asking, so an enqueue that lands after the query still wakes us.
        self._wake.clear()
        if self._stopping:  # stop() woke us during the claim: don't sleep through it
            return
        try:
            due = await self.store.next_due(self.name)
        except Exception:  # storage briefly away: poll again, never end the loop
            log.warning("next_due failed for %s; polling", self.name, exc_info=True)
            due = None
        wait = IDLE_POLL_S if due is None else min(IDLE_POLL_S, max(0.0, due - time.time()))
        if wait > 0:
            await self._sleep(wait, clear=False)  # keep a wake that came during the query

    async def _sleep(self, seconds: float, clear: bool = True) -> None:
        if clear:
            self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    async def _deliver(self, claims: list[Claimed], probe: bool = False) -> Result:
        started = time.monotonic()
        try:
            result = await self.sender.send(claims)
        except Exception as exc:  # a sender bug must not kill the dispatcher
            log.exception("sender %s raised", self.name)
            result = Result.retry(f"internal error: {type(exc).__name__}")
        ms = (time.monotonic() - started) * 1000
        # The receiver has answered: the slot is free for the next send while this outcome
        # waits for its group commit (holding the slot through the commit halved throughput).
        self._free_slot(asyncio.current_task())
        self._feed_circuit(result, probe)
        try:
            await self._record(claims, result, ms)
        except Exception:  # unrecorded: the leases run out and the deliveries go again
            log.exception("recording the outcome failed for %s", self.name)
        return result

    def _feed_circuit(self, result: Result, probe: bool) -> None:
        """Only RETRY counts as a failure: a rejection proves the receiver is up."""
        self.last_failed = result.outcome is not Outcome.DELIVERED
        c = self.circuit
        change = c.record(result.outcome is not Outcome.RETRY, time.monotonic(), probe)
        if change == "opened":
            log.warning(
                "circuit opened destination=%s failures=%d cooldown=%gs error=%s",
                self.name,
                c.failures,
                c.cooldown_s,
                result.error,
            )
        elif change == "reopened":
            log.warning(
                "circuit reopened destination=%s cooldown=%gs error=%s",
                self.name,
                c.cooldown_s,
                result.error,
            )
        elif change == "closed":
            log.info("circuit closed destination=%s", self.name)

    async def _record(self, claims: list[Claimed], result: Result, ms: float) -> None:
        decided = await self.outcomes.settle(self.name, self.dest.retry, claims, result, ms)
        self._decided(decided)

    def _decided(self, decided: list[Decision]) -> None:
        """How each claim was settled (the periodic dispatcher keeps its retry times)."""
