"""The dispatcher alone: a fake queue, a scripted sender and a fake outcomes sink.

What it owes every destination type: each claim is sent once and settled with what the
sender said; a sender's exception is a retry, never the end of the loop; a paused
dispatcher or an open circuit hands claims back untouched; stop hands back what was
claimed and not sent. The store and `Outcomes` have their own tests.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

from relay.config import CircuitPolicy, HttpDestination, RetryPolicy
from relay.dispatch.dispatcher import Dispatcher
from relay.models import Claimed, Outcome, Result
from relay.outcomes import Decision

from ..helpers import wait_for

DEST = HttpDestination("hook", "http://127.0.0.1:9/", retry=RetryPolicy(initial_s=60.0))


def claim(n: int) -> Claimed:
    return Claimed(n, 1000 + n, f"e{n}", "bounce", b"{}", 1, time.time())


class FakeQueue:
    """Due claims, handed out in order; what comes back by `release` is due again."""

    def __init__(self, n: int) -> None:
        self.due: deque[Claimed] = deque(claim(i) for i in range(n))
        self.released: list[Claimed] = []

    async def claim(self, destination: str, limit: int, lease_s: float) -> list[Claimed]:
        assert destination == "hook" and lease_s == DEST.lease_s
        return [self.due.popleft() for _ in range(min(limit, len(self.due)))]

    async def release(self, claims: list[Claimed]) -> None:
        self.released += claims
        self.due.extend(claims)

    async def next_due(self, destination: str) -> float | None:
        return time.time() if self.due else None


class FakeOutcomes:
    """Settles as `Outcomes` would decide, and remembers every call."""

    def __init__(self) -> None:
        self.settled: list[tuple[list[Claimed], Result]] = []

    async def settle(
        self,
        destination: str,
        policy: RetryPolicy,
        claims: list[Claimed],
        result: Result,
        ms: float,
    ) -> list[Decision]:
        assert destination == "hook" and policy is DEST.retry and ms >= 0
        self.settled.append((claims, result))
        outcome = "delivered" if result.outcome is Outcome.DELIVERED else "retry"
        return [(c, outcome, None) for c in claims]

    def ids(self) -> list[str]:
        return sorted(c.event_id for claims, _ in self.settled for c in claims)


class Sender:
    """Answers each send with the next scripted result (the last one repeats)."""

    batch_size = 1

    def __init__(self, *results: Result | Exception) -> None:
        self.results = list(results)
        self.sent: list[str] = []
        self.started = self.closed = False

    async def start(self) -> None:
        self.started = True

    async def send(self, claims: list[Claimed]) -> Result:
        self.sent += [c.event_id for c in claims]
        result = self.results.pop(0) if len(self.results) > 1 else self.results[0]
        if isinstance(result, Exception):
            raise result
        return result

    async def close(self) -> None:
        self.closed = True


def dispatcher(
    queue: FakeQueue, sender: Sender, outcomes: FakeOutcomes, **kw: int | CircuitPolicy
) -> Dispatcher:
    return Dispatcher(DEST, queue, sender, outcomes, **kw)


async def test_every_claim_is_sent_once_and_settled_with_the_senders_result() -> None:
    queue, sender, outcomes = FakeQueue(20), Sender(Result.delivered(200)), FakeOutcomes()
    d = dispatcher(queue, sender, outcomes, concurrency=4)
    await d.start()
    try:
        await wait_for(lambda: len(outcomes.settled) == 20, 5, "20 settled sends")
    finally:
        await d.stop(1)
    assert sorted(sender.sent) == sorted(f"e{i}" for i in range(20))
    assert outcomes.ids() == sorted(f"e{i}" for i in range(20))
    assert {r.outcome for _, r in outcomes.settled} == {Outcome.DELIVERED}
    assert sender.started and sender.closed and d.state == "ok"


async def test_a_sender_that_raises_is_settled_as_a_retry_and_the_loop_goes_on() -> None:
    queue, outcomes = FakeQueue(2), FakeOutcomes()
    sender = Sender(RuntimeError("bug"), Result.delivered(200))
    d = dispatcher(queue, sender, outcomes)
    await d.start()
    try:
        await wait_for(lambda: len(outcomes.settled) == 2, 5, "both settled")
    finally:
        await d.stop(1)
    first, second = (r for _, r in outcomes.settled)
    assert first.outcome is Outcome.RETRY and first.error == "internal error: RuntimeError"
    assert second.outcome is Outcome.DELIVERED
    assert d.running is False


async def test_an_open_circuit_hands_claims_back_and_sends_nothing_more() -> None:
    queue, outcomes = FakeQueue(10), FakeOutcomes()
    sender = Sender(Result.retry("HTTP 503", 503))
    policy = CircuitPolicy(failures=3, cooldown_s=60.0)
    d = dispatcher(queue, sender, outcomes, concurrency=1, circuit=policy)
    await d.start()
    try:
        await wait_for(lambda: d.state == "circuit_open", 5, "the circuit to open")
        await wait_for(lambda: not d._ready, 5, "unsent claims handed back")
        sent = len(sender.sent)
        await asyncio.sleep(0.2)  # the circuit holds: nothing more goes out meanwhile
        assert len(sender.sent) == sent == 3
    finally:
        await d.stop(1)
    assert len(outcomes.settled) == 3
    assert sorted(c.event_id for c in queue.due) == sorted(f"e{i}" for i in range(3, 10))


async def test_a_paused_dispatcher_sends_nothing_and_resumes_where_it_stopped() -> None:
    queue, sender, outcomes = FakeQueue(5), Sender(Result.delivered(200)), FakeOutcomes()
    d = dispatcher(queue, sender, outcomes)
    d.paused = True
    await d.start()
    try:
        await wait_for(lambda: d.state == "paused", 5, "paused")
        await asyncio.sleep(0.2)
        assert sender.sent == [] and len(queue.due) == 5
        d.paused = False
        d.wake()
        await wait_for(lambda: len(outcomes.settled) == 5, 5, "all five once resumed")
    finally:
        await d.stop(1)
    assert outcomes.ids() == [f"e{i}" for i in range(5)]


async def test_stop_hands_back_what_was_claimed_and_not_sent() -> None:
    gate = asyncio.Event()

    class Slow(Sender):
        async def send(self, claims: list[Claimed]) -> Result:
            self.sent += [c.event_id for c in claims]
            await gate.wait()
            return Result.delivered(200)

    queue, sender, outcomes = FakeQueue(6), Slow(), FakeOutcomes()
    d = dispatcher(queue, sender, outcomes, concurrency=1)
    await d.start()
    await wait_for(lambda: sender.sent == ["e0"], 5, "the first send in flight")
    stopping = asyncio.create_task(d.stop(5))
    gate.set()
    await stopping
    assert outcomes.ids() == ["e0"]  # the send in flight finished and was settled
    # It claims one round ahead (2 × concurrency × batch size): e1 was waiting for a slot.
    assert [c.event_id for c in queue.released] == ["e1"]
    assert sorted(c.event_id for c in queue.due) == [f"e{i}" for i in range(1, 6)]
