# ruff: noqa: F811 - `backend` and `store` are the contract suite's fixtures, imported
"""The store contract's console half: attempt history, one event's story, counters kept
as rows move, rate-capped replay, dead-letter filters and the audit trail.

Runs on every backend of `test_store.BACKENDS`, through the interface only.
"""

from __future__ import annotations

import time

import orjson
import pytest

from relay.models import Attempt, State
from relay.store import ATTEMPTS_KEPT, AckHistory, AttemptFilter, AuditEntry, ReplayFilter

from .test_store import backend, ev, store  # noqa: F401 - fixtures


def attempt(dest: str = "a", status: int | None = 200, error: str | None = None) -> Attempt:
    return Attempt(dest, time.time(), status, 12.5, error, "ok" if error is None else "nope")


async def test_ack_history_tallies_each_pull_batch_in_its_minute(store):
    """A pull ack writes no attempts, so the store tallies its batches: the events per
    minute and the newest batch, however old, for the live picture after a restart."""
    await store.append([ev("feed", id=f"k{i}") for i in range(5)])
    first = await store.claim("feed", 3, 60)
    assert len(await store.ack_lease("feed", first[0].lease)) == 3
    second = await store.claim("feed", 10, 60)
    assert len(await store.ack_lease("feed", second[0].lease)) == 2
    now = time.time()
    history = await store.ack_history("feed", now - 3600)
    assert sum(n for _, n in history.minutes) == 5  # the two may fall in two minutes
    assert all(0 <= int(now // 60) - m <= 1 for m, _ in history.minutes)
    assert history.last is not None
    ts, n, batch = history.last
    assert (n, batch) == (2, second[0].lease) and now - 60 < ts <= now
    # An ack that finds nothing held (acked already, another destination's) adds nothing.
    assert await store.ack_lease("feed", second[0].lease) == []
    assert await store.ack_lease("other", first[0].lease) == []
    assert await store.ack_history("feed", now - 3600) == history
    assert await store.ack_history("other", now - 3600) == AckHistory([], None)
    # Older than the window: no minutes, but the newest batch is still known.
    assert await store.ack_history("feed", now + 120) == AckHistory([], history.last)
    # Retention drops the tally with the deliveries it counted.
    await store.purge(now + 120)
    assert await store.ack_history("feed", now - 3600) == AckHistory([], None)


async def test_event_shows_each_delivery_with_its_attempts(store):
    await store.append([ev("a", "b", id="e1", event_type="engine_click")])
    [a] = await store.claim("a", 10, 60)
    await store.retry([(a, time.time() - 1)], "HTTP 500: boom", attempt("a", 500, "HTTP 500: boom"))
    [a] = await store.claim("a", 10, 60)
    await store.ack([a], attempt("a", 204))
    [b] = await store.claim("b", 10, 60)
    await store.dead([b], "HTTP 410", attempt("b", 410, "HTTP 410"))

    detail = await store.event("e1")
    assert detail is not None
    assert (detail.id, detail.event_type) == ("e1", "engine_click")
    assert orjson.loads(detail.body)["id"] == "e1"
    by_name = {d.destination: d for d in detail.deliveries}
    assert set(by_name) == {"a", "b"}
    a_hist = by_name["a"].history
    assert by_name["a"].state is State.DELIVERED
    assert [(h.attempt, h.outcome, h.status) for h in a_hist] == [
        (1, "retry", 500),
        (2, "delivered", 204),
    ]
    assert a_hist[0].error == "HTTP 500: boom" and a_hist[0].response == "nope"
    assert a_hist[1].ms == pytest.approx(12.5)
    assert by_name["b"].state is State.DEAD
    assert [(h.outcome, h.status) for h in by_name["b"].history] == [("dead", 410)]
    assert await store.event("nope") is None


async def test_attempt_minutes_count_each_outcome_per_minute(store):
    await store.append([ev("a", "b", id=f"m{i}") for i in range(3)])
    claims = await store.claim("a", 10, 60)
    now = time.time()
    await store.ack(claims[:2], Attempt("a", now, 204, 1.0, None, None))
    await store.retry([(claims[2], now + 60)], "x", Attempt("a", now, 500, 1.0, "x", None))
    minute = int(now // 60)
    assert sorted(await store.attempt_minutes("a", now - 3600)) == [
        (minute, False, 1),
        (minute, True, 2),
    ]
    assert await store.attempt_minutes("a", now + 1) == []
    assert await store.attempt_minutes("b", now - 3600) == []


async def test_pending_event_has_no_attempts(store):
    await store.append([ev("a", id="p1", due_in=60)])
    detail = await store.event("p1")
    [d] = detail.deliveries
    assert (d.state, d.attempts, d.history) == (State.PENDING, 0, ())


async def test_history_keeps_the_newest_attempts_of_a_delivery(store):
    await store.append([ev("a", id="k1")])
    for _ in range(ATTEMPTS_KEPT + 3):
        [c] = await store.claim("a", 1, 60)
        await store.retry([(c, time.time() - 1)], "x", attempt(error="x", status=503))
    [d] = (await store.event("k1")).deliveries
    assert d.attempts == ATTEMPTS_KEPT + 3
    assert [h.attempt for h in d.history] == list(range(4, ATTEMPTS_KEPT + 4))


async def test_attempts_newest_first_with_filters_and_keyset(store):
    await store.append(
        [ev("a", id=f"f{i}", event_type="bounce" if i % 2 else "engine_open") for i in range(6)]
    )
    claims = await store.claim("a", 10, 60)
    for i, c in enumerate(claims):
        if i < 3:
            await store.ack([c], attempt(status=200))
        else:
            await store.dead([c], "HTTP 400", attempt(status=400, error="HTTP 400"))
    everything = await store.attempts(AttemptFilter(destination="a"), 100)
    assert len(everything) == 6
    assert [r.ts for r in everything] == sorted((r.ts for r in everything), reverse=True)
    failed = await store.attempts(AttemptFilter(destination="a", outcome="failed"), 100)
    assert {r.event_id for r in failed} == {c.event_id for c in claims[3:]}
    opens = await store.attempts(AttemptFilter(destination="a", event_type="engine_open"), 100)
    assert {r.event_type for r in opens} == {"engine_open"} and len(opens) == 3
    assert await store.attempts(AttemptFilter(destination="b"), 100) == []
    assert await store.attempts(AttemptFilter(destination="a", since=time.time() + 10), 100) == []
    first = await store.attempts(AttemptFilter(destination="a"), 4)
    last = first[-1]
    rest = await store.attempts(
        AttemptFilter(destination="a", before=(last.ts, last.delivery_id, last.attempt)), 4
    )
    assert [r.event_id for r in first + rest] == [r.event_id for r in everything]


async def test_stats_follow_every_move_without_counting(store):
    await store.append([ev("a", id=f"m{i}") for i in range(5)] + [ev(id="unrouted")])
    s = await store.stats()
    assert (s.events, s.unrouted) == (6, 1)
    assert s.destinations["a"].pending == 5
    claims = await store.claim("a", 4, 60)
    await store.ack(claims[:2])
    await store.dead(claims[2:3], "x")
    await store.release(claims[3:])
    a = (await store.stats()).destinations["a"]
    assert (a.pending, a.leased, a.delivered, a.dead) == (2, 0, 2, 1)
    await store.replay(ReplayFilter(destination="a"))
    a = (await store.stats()).destinations["a"]
    assert (a.pending, a.dead) == (3, 0)
    pulled = await store.claim("a", 10, 60)
    assert (await store.stats()).destinations["a"].leased == 3
    await store.ack(pulled)
    a = (await store.stats()).destinations["a"]
    assert (a.pending, a.leased, a.delivered, a.oldest_pending_s) == (0, 0, 5, None)


async def test_replay_with_a_rate_spreads_the_due_times(store):
    await store.append([ev("a", id=f"r{i}") for i in range(10)])
    claims = await store.claim("a", 10, 60)
    await store.dead(claims, "x")
    before = time.time()
    replayed = await store.replay(ReplayFilter(destination="a"), rate=5.0)
    assert sorted(replayed) == sorted(c.event_id for c in claims)
    # 10 at 5/s: the last is due ~1.8 s from now; only the first few are due at once.
    assert len(await store.claim("a", 10, 60)) <= 2
    assert await store.next_due("a") <= before + 2.5


async def test_replay_dry_run_changes_nothing(store):
    await store.append([ev("a", id=f"d{i}") for i in range(3)])
    await store.dead(await store.claim("a", 10, 60), "x")
    matched = await store.replay(ReplayFilter(destination="a"), dry_run=True)
    assert sorted(matched) == ["d0", "d1", "d2"]
    assert (await store.stats()).destinations["a"].dead == 3


async def test_dead_list_filters_on_received_time_and_pages(store):
    now = time.time()
    await store.append([ev("a", id=f"t{i}", received_at=now - 100 + i * 10) for i in range(5)])
    await store.dead(await store.claim("a", 10, 60), "x")
    recent = await store.dead_list("a", 0, 100, since=now - 75)
    assert [d.event_id for d in recent] == ["t3", "t4"]
    older = await store.dead_list("a", 0, 100, until=now - 75)
    assert [d.event_id for d in older] == ["t0", "t1", "t2"]
    page1 = await store.dead_list("a", 0, 2)
    page2 = await store.dead_list("a", page1[-1].delivery_id, 2)
    assert [d.event_id for d in page1 + page2] == ["t0", "t1", "t2", "t3"]


async def test_oldest_pending_of_given_event_types(store):
    now = time.time()
    await store.append(
        [
            ev("a", id="u1", event_type="engine_unsub", received_at=now - 3 * 86400),
            ev("a", id="u2", event_type="engine_unsub", received_at=now - 2 * 86400),
            ev("a", id="o1", event_type="engine_open", received_at=now - 3 * 86400),
            ev("b", id="u3", event_type="engine_unsub", received_at=now - 60),
        ]
    )
    late = await store.oldest_pending(("engine_unsub", "complaint"), now - 86400)
    assert set(late) == {"a"}
    count, oldest = late["a"]
    assert count == 2 and oldest == pytest.approx(now - 3 * 86400)


async def test_audit_trail_newest_first(store):
    await store.audit(AuditEntry(time.time(), "alice", "pause", "crm", None, "for 30m"))
    await store.audit(AuditEntry(time.time(), "loopback", "replay", "crm", 12, "group 4f1c"))
    entries = await store.audit_log(10)
    assert [(e.actor, e.action, e.count) for e in entries] == [
        ("loopback", "replay", 12),
        ("alice", "pause", None),
    ]
    assert entries[1].detail == "for 30m"


async def test_replay_by_more_ids_than_one_statement_takes(store):
    n = 21_000  # over SQLite's chunk of ids per statement
    await store.append([ev("a", id=f"big{i}") for i in range(n)])
    claims = []
    while batch := await store.claim("a", 5000, 60):
        claims += batch
    await store.dead(claims, "x")
    wanted = tuple(f"big{i}" for i in range(n))
    assert len(await store.replay(ReplayFilter("a", wanted), dry_run=True)) == n
    assert len(await store.replay(ReplayFilter("a", wanted), rate=1000.0)) == n
    # Paced across the whole set, not per statement: the last is due ~21 s from now.
    assert (await store.stats()).destinations["a"].pending == n
    assert len(await store.claim("a", n, 60)) < 2000
