"""Delivery against a misbehaving receiver: retries, backoff, Retry-After,
timeouts, dropped connections, refused ports, dead letters, replay and max_age."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

import pytest

from relay.store import ReplayFilter

from ..helpers import base_toml, free_port, wait_for

FAST_RETRY = 'retry = { initial = "50ms", max = "200ms", multiplier = 2.0, max_attempts = 4 }\n'


def config(url: str, extra: str = FAST_RETRY, name: str = "crm") -> str:
    return (
        base_toml()
        + f'[destinations.{name}]\ntype = "http"\nurl = "{url}"\ntimeout = "300ms"\n'
        + extra
        + f'[[routes]]\nevents = ["*"]\ndestinations = ["{name}"]\n'
    )


def event(event_id: str = "e1") -> dict:
    return {"event_type": "bounce", "email": "a@example.com", "id": event_id}


def ts(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def outcomes(relay) -> list[str]:
    return [line["outcome"] for line in relay.dispatch_lines()]


async def stats_of(relay, name: str = "crm"):
    return (await relay.store.stats()).destinations[name]


async def test_two_500s_then_200_is_delivered_on_the_third_attempt(make_relay, receiver):
    receiver.script = [500, 500, 200]
    relay = await make_relay(config(receiver.url))
    assert (await relay.post_events(event())).status == 202

    await wait_for(lambda: "delivered" in outcomes(relay), 5, "the delivered line")
    assert len(receiver.hits) == 3
    assert receiver.delivered_ids() == ["e1", "e1", "e1"]  # the same id on every attempt

    lines = relay.dispatch_lines()
    assert [(x["outcome"], x["attempt"], x["status"]) for x in lines] == [
        ("retry", 1, 500),
        ("retry", 2, 500),
        ("delivered", 3, 200),
    ]
    for line in lines:
        assert line["event_id"] == "e1"
        assert line["event_type"] == "bounce"
        assert line["destination"] == "crm"
        assert isinstance(line["ms"], int | float) and line["ms"] >= 0
        assert line["ts"].endswith("Z")
    for retry in lines[:2]:
        assert "500" in retry["error"]
        assert retry["next_attempt"] is not None
        # The next attempt is in the future, within the policy's max (200 ms).
        assert 0 < ts(retry["next_attempt"]) - ts(retry["ts"]) <= 0.2 + 0.002
    assert lines[2]["error"] is None and lines[2]["next_attempt"] is None
    s = await stats_of(relay)
    assert (s.delivered, s.pending, s.dead) == (1, 0, 0)


@pytest.mark.parametrize("status", [429, 503])
async def test_retry_after_on_429_or_503_is_honoured_over_a_shorter_backoff(
    make_relay, receiver, status
):
    receiver.script = [(str(status), 1), 200]
    relay = await make_relay(config(receiver.url))
    await relay.post_events(event())

    await wait_for(lambda: len(receiver.hits) == 2, 5, "the second attempt")
    gap = receiver.hits[1].at - receiver.hits[0].at
    assert gap >= 0.99, f"retried after {gap:.3f}s despite Retry-After: 1"
    await wait_for(lambda: "delivered" in outcomes(relay), 3, "the delivered line")
    first = relay.dispatch_lines()[0]
    assert (first["outcome"], first["status"]) == ("retry", status)
    # Scheduled for exactly Retry-After (the backoff, <= 200 ms, is shorter): honoured, and
    # not forgotten for a later time either. (Millisecond timestamps: 2 ms of rounding.)
    assert 0.998 <= ts(first["next_attempt"]) - ts(first["ts"]) <= 1.002


async def test_a_receiver_that_hangs_past_the_timeout_is_retried(make_relay, receiver):
    receiver.script = ["hang", 200]
    relay = await make_relay(config(receiver.url))
    await relay.post_events(event())

    await wait_for(lambda: "delivered" in outcomes(relay), 5, "the delivered line")
    assert len(receiver.hits) == 2
    assert receiver.hits[1].at - receiver.hits[0].at >= 0.3  # it waited for the timeout
    retry, delivered = relay.dispatch_lines()
    assert retry["outcome"] == "retry" and retry["status"] is None
    assert "timeout" in retry["error"].lower()
    assert retry["ms"] >= 290  # the attempt lasted about the timeout (300 ms)
    assert (delivered["outcome"], delivered["attempt"], delivered["status"]) == (
        "delivered",
        2,
        200,
    )


async def test_a_dropped_connection_is_retried(make_relay, receiver):
    receiver.script = ["drop", 200]
    relay = await make_relay(config(receiver.url))
    await relay.post_events(event())

    await wait_for(lambda: "delivered" in outcomes(relay), 5, "the delivered line")
    retry, delivered = relay.dispatch_lines()
    assert retry["outcome"] == "retry" and retry["status"] is None and retry["error"]
    assert (delivered["outcome"], delivered["attempt"]) == ("delivered", 2)
    assert receiver.delivered_ids() == ["e1", "e1"]


async def test_a_refused_port_retries_until_max_attempts_then_dead(make_relay):
    relay = await make_relay(config(f"http://127.0.0.1:{free_port()}/hook"))
    await relay.post_events(event())

    await wait_for(lambda: "dead" in outcomes(relay), 5, "the dead line")
    lines = relay.dispatch_lines()
    assert [(x["outcome"], x["attempt"]) for x in lines] == [
        ("retry", 1),
        ("retry", 2),
        ("retry", 3),
        ("dead", 4),
    ]
    assert all(x["status"] is None and x["error"] for x in lines)
    assert "connect" in lines[-1]["error"].lower()
    assert lines[-1]["next_attempt"] is None
    s = await stats_of(relay)
    assert (s.dead, s.pending, s.leased, s.delivered) == (1, 0, 0, 0)
    [dead] = await relay.store.dead_list("crm", 0, 10)
    assert (dead.event_id, dead.attempts) == ("e1", 4)
    assert "connect" in dead.last_error.lower()


async def test_a_dead_delivery_is_replayed_and_then_delivered(make_relay, receiver):
    receiver.script = [500, 500, 500, 500]  # max_attempts failures
    relay = await make_relay(config(receiver.url))
    await relay.post_events(event())
    await wait_for(lambda: "dead" in outcomes(relay), 5, "the dead line")
    assert len(receiver.hits) == 4
    assert (await stats_of(relay)).dead == 1

    replayed = await relay.store.replay(ReplayFilter(destination="crm"))
    assert replayed == ["e1"]
    # Nothing woke the dispatcher: it finds the replay by polling (at least every second).
    await wait_for(lambda: "delivered" in outcomes(relay), 3, "delivery after replay")
    assert len(receiver.hits) == 5
    last = relay.dispatch_lines()[-1]
    assert (last["outcome"], last["attempt"], last["status"]) == ("delivered", 1, 200)
    s = await stats_of(relay)
    assert (s.dead, s.delivered, s.pending) == (0, 1, 0)


async def test_retry_gaps_follow_the_exponential_policy(make_relay, receiver):
    receiver.script = [500, 500, 500, 200]
    relay = await make_relay(
        config(
            receiver.url,
            'retry = { initial = "100ms", max = "1s", multiplier = 2.0, max_attempts = 6 }\n',
        )
    )
    await relay.post_events(event())
    await wait_for(lambda: len(receiver.hits) == 4, 5, "four attempts")

    at = [h.at for h in receiver.hits]
    gaps = [b - a for a, b in zip(at, at[1:], strict=False)]
    await wait_for(lambda: len(relay.dispatch_lines()) == 4, 3, "four dispatch lines")
    lines = relay.dispatch_lines()
    for gap, line, expected in zip(gaps, lines, [0.1, 0.2, 0.4], strict=False):
        # Scheduled by the policy, jitter making it up to 20% early, never late (ms stamps);
        # sent no earlier than scheduled (how much later is the machine's business).
        due = ts(line["next_attempt"]) - ts(line["ts"])
        assert 0.8 * expected - 0.002 <= due <= expected + 0.002, (line, expected)
        assert gap >= 0.8 * expected - 0.002, f"gaps {gaps}: {gap:.3f}s where {expected}s was due"


async def test_an_event_older_than_max_age_is_dead(make_relay, receiver):
    receiver.default = 500
    relay = await make_relay(
        config(
            receiver.url,
            'retry = { initial = "50ms", max = "50ms", max_attempts = 1000, max_age = "400ms" }\n',
        )
    )
    started = time.time()
    await relay.post_events(event())

    await wait_for(lambda: "dead" in outcomes(relay), 5, "the dead line")
    lines = relay.dispatch_lines()
    dead = lines[-1]
    assert dead["attempt"] < 1000  # max_age, not max_attempts, ended it
    assert ts(dead["ts"]) - started >= 0.4
    assert ts(dead["ts"]) - started < 2.0
    assert all(x["outcome"] == "retry" for x in lines[:-1])
    assert (await stats_of(relay)).dead == 1
    hits = len(receiver.hits)
    await asyncio.sleep(0.3)  # after dead, nothing more is sent
    assert len(receiver.hits) == hits


async def test_410_gone_is_dead_at_once_with_the_reason_and_the_circuit_stays_closed(
    make_relay, receiver
):
    receiver.default = 410
    relay = await make_relay(config(receiver.url))
    assert (await relay.post_events([event("g1"), event("g2")])).status == 202
    await wait_for(lambda: outcomes(relay).count("dead") == 2, 5, "both dead")
    await asyncio.sleep(0.3)  # four attempts would have fitted in this time: none came
    assert len(receiver.hits) == 2
    lines = relay.dispatch_lines()
    assert [(x["outcome"], x["attempt"], x["status"]) for x in lines] == [("dead", 1, 410)] * 2
    assert all(x["error"] == "HTTP 410: nope" and x["next_attempt"] is None for x in lines)
    s = await stats_of(relay)
    assert (s.dead, s.pending) == (2, 0)
    assert relay.runtime.dispatchers["crm"].state == "failing"  # not circuit_open
    detail = await relay.store.event("g1")
    assert detail.deliveries[0].last_error == "HTTP 410: nope"


async def test_reject_lists_the_permanent_statuses_and_an_empty_list_retries_them(
    make_relay, receiver
):
    receiver.script = [410, 200, 404]
    relay = await make_relay(config(receiver.url, FAST_RETRY + "reject = [404]\n"))
    assert (await relay.post_events(event("r1"))).status == 202
    await wait_for(lambda: "delivered" in outcomes(relay), 5, "410 retried, then delivered")
    assert (await relay.post_events(event("r2"))).status == 202
    await wait_for(lambda: "dead" in outcomes(relay), 5, "404 dead at once")
    assert [(x["event_id"], x["outcome"], x["status"]) for x in relay.dispatch_lines()] == [
        ("r1", "retry", 410),
        ("r1", "delivered", 200),
        ("r2", "dead", 404),
    ]
