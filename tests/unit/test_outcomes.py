"""`Outcomes` alone: the one place a send's result becomes store verbs, log lines, metrics
and the console's live picture. A fake store records the verbs; the dispatch log is a
real file; a listener records what it is told."""

from __future__ import annotations

import time
from pathlib import Path

import orjson

from relay.config import RetryPolicy
from relay.dispatch.log import DispatchLog
from relay.models import Attempt, Claimed, Result
from relay.outcomes import Outcomes

POLICY = RetryPolicy(initial_s=10.0, max_attempts=3)


def claim(n: int, attempts: int = 1) -> Claimed:
    return Claimed(n, 7, f"e{n}", "bounce", b"{}", attempts, time.time())


class FakeStore:
    def __init__(self, held: list[str] | None = None) -> None:
        self.verbs: list[tuple] = []
        self.held = held or []

    async def ack(self, claims: list[Claimed], attempt: Attempt | None = None) -> None:
        self.verbs.append(("ack", [c.event_id for c in claims], attempt))

    async def retry(
        self, claims: list[tuple[Claimed, float]], error: str | None, attempt: Attempt | None = None
    ) -> None:
        self.verbs.append(("retry", [c.event_id for c, _ in claims], error))

    async def dead(
        self, claims: list[Claimed], error: str | None, attempt: Attempt | None = None
    ) -> None:
        self.verbs.append(("dead", [c.event_id for c in claims], error))

    async def ack_lease(self, destination: str, lease: int) -> list[str]:
        return self.held if lease == 7 else []


class Listener:
    def __init__(self) -> None:
        self.tallies: list[tuple[str, dict[str, int]]] = []
        self.delivered_claims: list[str] = []

    def settled(self, destination: str, tally: dict[str, int]) -> None:
        self.tallies.append((destination, tally))

    def delivered(self, destination: str, claims: list[Claimed], now: float) -> None:
        self.delivered_claims += [c.event_id for c in claims]


def lines(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


async def test_a_delivered_send_is_acked_with_its_attempt_logged_counted_and_shown(
    tmp_path: Path,
) -> None:
    store, listener = FakeStore(), Listener()
    log = DispatchLog(str(tmp_path / "dispatch.log"))
    outcomes = Outcomes(store, log, [listener])
    decided = await outcomes.settle(
        "hook", POLICY, [claim(1), claim(2)], Result.delivered(200, "ok" * 2000), 12.5
    )
    log.close()
    assert [o for _, o, _ in decided] == ["delivered", "delivered"]
    verb, ids, attempt = store.verbs[0]
    assert (verb, ids, attempt.status, attempt.ms) == ("ack", ["e1", "e2"], 200, 12.5)
    assert len(attempt.response) == 2048  # RESPONSE_CHARS of the answer are kept
    assert [(x["event_id"], x["outcome"]) for x in lines(tmp_path / "dispatch.log")] == [
        ("e1", "delivered"),
        ("e2", "delivered"),
    ]
    assert listener.tallies == [("hook", {"delivered": 2})]
    assert listener.delivered_claims == ["e1", "e2"]
    assert outcomes.tallies["hook"]["delivered"] == 2
    assert outcomes.activities["hook"].last_success.status == 200


async def test_a_failure_retries_until_the_policy_gives_up_then_is_dead(tmp_path: Path) -> None:
    store, listener = FakeStore(), Listener()
    log = DispatchLog(str(tmp_path / "dispatch.log"))
    outcomes = Outcomes(store, log, [listener])
    result = Result.retry("HTTP 503: busy", 503)
    decided = await outcomes.settle("hook", POLICY, [claim(1, 1), claim(2, 3)], result, 3.0)
    log.close()
    (c1, o1, at1), (c2, o2, at2) = decided
    assert (o1, o2, at2) == ("retry", "dead", None)
    assert 8 <= at1 - time.time() <= 10  # initial 10 s, up to 20% early
    assert sorted(store.verbs) == [
        ("dead", ["e2"], "HTTP 503: busy"),
        ("retry", ["e1"], "HTTP 503: busy"),
    ]
    logged = lines(tmp_path / "dispatch.log")
    assert [(x["outcome"], x["status"], x["error"]) for x in logged] == [
        ("retry", 503, "HTTP 503: busy"),
        ("dead", 503, "HTTP 503: busy"),
    ]
    assert listener.tallies == [("hook", {"retry": 1, "dead": 1})]
    assert listener.delivered_claims == []
    assert outcomes.activities["hook"].last_failure.error == "HTTP 503: busy"


async def test_a_pull_lease_and_ack_are_settled_like_a_push(tmp_path: Path) -> None:
    store, listener = FakeStore(held=["e1", "e2"]), Listener()
    log = DispatchLog(str(tmp_path / "dispatch.log"))
    outcomes = Outcomes(store, log, [listener])
    outcomes.leased("feed", [claim(1), claim(2)])
    last_pull = outcomes.activities["feed"].last_sent
    assert await outcomes.acked("feed", 8) == []  # not held: nothing settles
    assert await outcomes.acked("feed", 7) == ["e1", "e2"]
    log.close()
    assert [(x["outcome"], x["count"]) for x in lines(tmp_path / "dispatch.log")] == [
        ("leased", 2),
        ("acked", 2),
    ]
    assert listener.tallies == [("feed", {"leased": 2}), ("feed", {"delivered": 2})]
    assert outcomes.activities["feed"].last_sent == last_pull  # an ack is not a pull
    assert outcomes.tallies["feed"]["delivered"] == 2
