"""The queue contract (`relay.store.base.Store`), run against every storage backend.

Everything here goes through the interface only, so a new backend joins by adding one
entry to `BACKENDS`: an adapter that makes an unopened store at a fixed location and can
make that location's schema look newer than the code (test setup only).
"""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import orjson
import pytest

from relay.models import Claimed, NewEvent, State
from relay.store import ReplayFilter, StorageUnavailable, Store
from relay.store.postgres import PostgresStore
from relay.store.sqlite import SqliteStore

from .. import pg
from ..helpers import wait_for


class SqliteBackend:
    def __init__(self, tmp_path: Path) -> None:
        self.path = tmp_path / "store.db"

    def new(self) -> Store:
        return SqliteStore(self.path)

    def make_schema_newer(self) -> None:
        with sqlite3.connect(self.path) as db:
            db.execute("PRAGMA user_version = 9999")
        db.close()


class PostgresBackend:
    """A fresh schema of the test PostgreSQL per test (`tests/pg.py`)."""

    def __init__(self, tmp_path: Path) -> None:
        self.dsn = pg.fresh_schema_dsn()

    def new(self) -> Store:
        return PostgresStore(self.dsn, pool_size=4)

    def make_schema_newer(self) -> None:
        pg.execute("UPDATE relay_schema SET version = 9999", self.dsn)


BACKENDS = {"sqlite": SqliteBackend, "postgres": PostgresBackend}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request, tmp_path):
    return BACKENDS[request.param](tmp_path)


@pytest.fixture
async def store(backend) -> AsyncIterator[Store]:
    s = backend.new()
    await s.open()
    try:
        yield s
    finally:
        await s.close()


_ids = itertools.count()


def ev(
    *destinations: str,
    id: str | None = None,
    due_in: float = -1.0,
    received_at: float | None = None,
    event_type: str = "bounce",
) -> NewEvent:
    """An event routed to `destinations`, each delivery due `due_in` seconds from now."""
    now = time.time()
    event_id = id or f"ev-{next(_ids)}"
    return NewEvent(
        id=event_id,
        event_type=event_type,
        received_at=now if received_at is None else received_at,
        body=b'{"id":"%s","event_type":"%s"}' % (event_id.encode(), event_type.encode()),
        deliveries=tuple((d, now + due_in) for d in destinations),
    )


def ids(claims: list[Claimed]) -> list[str]:
    return [c.event_id for c in claims]


async def dest_stats(store: Store, name: str) -> dict:
    return (
        (await store.stats())
        .as_dict()["destinations"]
        .get(
            name,
            {"pending": 0, "leased": 0, "dead": 0, "delivered": 0, "oldest_pending_s": None},
        )
    )


# -- append --------------------------------------------------------------------------------


async def test_append_says_which_were_new_and_ignores_known_ids(store):
    assert await store.append([ev("a", id="e1"), ev("a", id="e2")]) == [True, True]
    assert await store.append([ev("a", id="e1"), ev("a", id="e3")]) == [False, True]
    assert await store.append([ev("a", id="e1")]) == [False]
    assert (await store.stats()).events == 3
    # A repeated id brought no second delivery with it.
    assert sorted(ids(await store.claim("a", 100, 60))) == ["e1", "e2", "e3"]


async def test_append_is_idempotent_within_one_call_and_across_concurrent_calls(store):
    assert await store.append([ev("a", id="same"), ev("a", id="same")]) == [True, False]
    results = await asyncio.gather(*(store.append([ev("a", id="race")]) for _ in range(20)))
    assert sorted(results) == [[False]] * 19 + [[True]]
    assert (await store.stats()).events == 2
    assert sorted(ids(await store.claim("a", 100, 60))) == ["race", "same"]


async def test_append_stores_body_and_type_as_given(store):
    e = ev("a", id="x1", event_type="engine_click")
    await store.append([e])
    [c] = await store.claim("a", 10, 60)
    assert (c.event_id, c.event_type, c.body, c.attempts) == ("x1", "engine_click", e.body, 1)
    assert c.created_at == pytest.approx(e.received_at)


# -- claim ---------------------------------------------------------------------------------


async def test_claim_takes_only_due_deliveries(store):
    await store.append([ev("a", id="now", due_in=-1), ev("a", id="later", due_in=60)])
    assert ids(await store.claim("a", 10, 60)) == ["now"]
    assert await store.claim("a", 10, 60) == []
    assert await store.next_due("a") == pytest.approx(time.time() + 60, abs=5)
    assert await store.next_due("nothing-here") is None


async def test_claim_respects_limit_order_and_destination(store):
    await store.append([ev("a", id="a3", due_in=-1)])
    await store.append([ev("a", "b", id="a1", due_in=-3)])
    await store.append([ev("a", id="a2", due_in=-2)])
    first = await store.claim("a", 2, 60)
    assert ids(first) == ["a1", "a2"]  # oldest due first, at most `limit`
    assert ids(await store.claim("a", 2, 60)) == ["a3"]
    assert await store.claim("a", 2, 60) == []
    assert ids(await store.claim("b", 10, 60)) == ["a1"]  # its own queue, untouched by a's claims
    assert await store.claim("c", 10, 60) == []
    assert len({c.lease for c in first}) == 1  # one claim, one fencing token


async def test_claim_with_event_types_takes_only_those_and_leaves_the_rest_in_place(store):
    """The SOAP pull's notificationTypes: other types stay pending, due as they were."""
    await store.append([ev("a", id="b1", due_in=-4)])
    await store.append([ev("a", id="o1", due_in=-3, event_type="engine_open")])
    await store.append([ev("a", id="c1", due_in=-2, event_type="engine_click")])
    await store.append([ev("a", id="o2", due_in=-1, event_type="engine_open")])
    wanted = {"engine_open", "engine_click"}
    assert ids(await store.claim("a", 2, 60, wanted)) == ["o1", "c1"]
    assert ids(await store.claim("a", 10, 60, {"sms_failed"})) == []
    assert ids(await store.claim("a", 10, 60, wanted)) == ["o2"]
    assert ids(await store.claim("a", 10, 60)) == ["b1"]  # untouched, still first in line


async def test_each_claim_gets_a_new_lease(store):
    await store.append([ev("a"), ev("a")])
    first = await store.claim("a", 1, 60)
    second = await store.claim("a", 1, 60)
    assert first[0].lease != second[0].lease
    assert first[0].delivery_id != second[0].delivery_id


# -- leases and fencing --------------------------------------------------------------------


async def _expire_and_reclaim(store: Store, destination: str) -> tuple[Claimed, Claimed]:
    """Claim with a tiny lease, wait for it to run out, claim the same delivery again."""
    [old] = await store.claim(destination, 1, 0.05)
    again: list[Claimed] = []

    async def reclaimed() -> bool:
        again.extend(await store.claim(destination, 1, 60))
        return bool(again)

    await wait_for(reclaimed, 5, "the expired lease to be claimable again")
    [new] = again
    assert new.delivery_id == old.delivery_id and new.lease != old.lease
    assert new.attempts == old.attempts + 1
    return old, new


async def test_an_unexpired_lease_is_not_claimed_again(store):
    await store.append([ev("a")])
    assert len(await store.claim("a", 10, 60)) == 1
    assert await store.claim("a", 10, 60) == []
    assert (await dest_stats(store, "a"))["leased"] == 1


async def test_stale_claim_cannot_ack_after_reclaim(store):
    await store.append([ev("a", id="f1")])
    old, new = await _expire_and_reclaim(store, "a")
    await store.ack([old])
    s = await dest_stats(store, "a")
    assert (s["leased"], s["delivered"]) == (1, 0)
    await store.ack([new])
    s = await dest_stats(store, "a")
    assert (s["leased"], s["delivered"]) == (0, 1)


async def test_stale_claim_cannot_retry_or_kill_after_reclaim(store):
    await store.append([ev("a", id="f2")])
    old, new = await _expire_and_reclaim(store, "a")
    await store.retry([(old, time.time() - 1)], "late")
    await store.dead([old], "late")
    s = await dest_stats(store, "a")
    assert (s["pending"], s["leased"], s["dead"]) == (0, 1, 0)
    assert await store.dead_list(None, 0, 10) == []
    assert await store.claim("a", 10, 60) == []  # still held by the new claim
    await store.dead([new], "gave up")
    [row] = await store.dead_list(None, 0, 10)
    assert (row.event_id, row.last_error, row.attempts) == ("f2", "gave up", 2)


async def test_stale_claim_cannot_ack_a_finished_delivery_again(store):
    await store.append([ev("a")])
    [c] = await store.claim("a", 1, 60)
    await store.dead([c], "boom")
    await store.ack([c])  # a late success report for a delivery already given up on
    s = await dest_stats(store, "a")
    assert (s["dead"], s["delivered"]) == (1, 0)


async def test_expired_lease_counts_as_pending(store):
    await store.append([ev("a")])
    await store.claim("a", 1, 0.05)

    async def pending_again() -> bool:
        return (await dest_stats(store, "a"))["pending"] == 1

    await wait_for(pending_again, 5, "the expired lease to count as pending")
    assert (await dest_stats(store, "a"))["leased"] == 0


# -- outcomes ------------------------------------------------------------------------------


async def test_ack_marks_delivered(store):
    await store.append([ev("a"), ev("a")])
    claims = await store.claim("a", 10, 60)
    await store.ack(claims)
    s = await dest_stats(store, "a")
    assert (s["pending"], s["leased"], s["delivered"], s["oldest_pending_s"]) == (0, 0, 2, None)
    assert await store.claim("a", 10, 60) == []
    assert await store.next_due("a") is None


async def test_retry_makes_pending_again_at_the_given_time(store):
    await store.append([ev("a", id="soon"), ev("a", id="later")])
    claims = {c.event_id: c for c in await store.claim("a", 10, 60)}
    now = time.time()
    await store.retry([(claims["soon"], now - 1), (claims["later"], now + 60)], "503")
    s = await dest_stats(store, "a")
    assert (s["pending"], s["leased"]) == (2, 0)
    [again] = await store.claim("a", 10, 60)
    assert (again.event_id, again.attempts) == ("soon", 2)
    assert await store.claim("a", 10, 60) == []
    assert await store.next_due("a") == pytest.approx(now + 60, abs=0.01)


async def test_retry_keeps_the_error_for_the_console(store):
    await store.append([ev("a", id="re1")])
    [c] = await store.claim("a", 1, 60)
    await store.retry([(c, time.time() + 60)], "HTTP 503: busy")
    detail = await store.event("re1")
    assert detail is not None
    [d] = detail.deliveries
    assert (d.state, d.attempts, d.last_error) == (State.PENDING, 1, "HTTP 503: busy")


async def test_dead_shows_in_dead_list_with_attempts_and_error(store):
    await store.append([ev("a", id="d1", event_type="scomp")])
    [c] = await store.claim("a", 1, 60)
    await store.dead([c], "HTTP 410")
    s = await dest_stats(store, "a")
    assert (s["pending"], s["leased"], s["dead"]) == (0, 0, 1)
    [row] = await store.dead_list(None, 0, 10)
    assert (row.event_id, row.event_type, row.destination, row.attempts, row.last_error) == (
        "d1",
        "scomp",
        "a",
        1,
        "HTTP 410",
    )
    assert await store.claim("a", 10, 60) == []  # dead stays dead until replayed


async def _kill_all(store: Store, destination: str, error: str = "down") -> None:
    claims = await store.claim(destination, 10_000, 60)
    await store.dead(claims, error)


async def test_dead_list_pages_by_keyset_and_filters_by_destination(store):
    await store.append([ev("a", "b", id=f"k{i}") for i in range(5)])
    await _kill_all(store, "a")
    await _kill_all(store, "b")
    pages, after = [], 0
    while page := await store.dead_list("a", after, 2):
        assert len(page) <= 2
        pages.append([r.event_id for r in page])
        after = page[-1].delivery_id
    assert pages == [["k0", "k1"], ["k2", "k3"], ["k4"]]
    everything = await store.dead_list(None, 0, 100)
    assert len(everything) == 10
    assert [r.delivery_id for r in everything] == sorted(r.delivery_id for r in everything)
    assert {r.destination for r in await store.dead_list("b", 0, 100)} == {"b"}
    # A row killed after a page was read shows up on a later page, not a repeated one.
    await store.append([ev("a", id="k5")])
    await _kill_all(store, "a")
    assert [r.event_id for r in await store.dead_list("a", after, 100)] == ["k5"]


async def test_replay_by_destination_resets_attempts(store):
    await store.append([ev("a", "b", id="r1")])
    for _ in range(2):  # two failed attempts before it died on "a"
        [c] = await store.claim("a", 1, 60)
        await store.retry([(c, time.time() - 1)], "500")
    [c] = await store.claim("a", 1, 60)
    await store.dead([c], "500")
    await _kill_all(store, "b")
    assert await store.replay(ReplayFilter(destination="a")) == ["r1"]
    s = await dest_stats(store, "a")
    assert (s["pending"], s["dead"]) == (1, 0)
    assert (await dest_stats(store, "b"))["dead"] == 1  # the other destination untouched
    [again] = await store.claim("a", 1, 60)
    assert again.attempts == 1
    assert await store.replay(ReplayFilter(destination="a")) == []  # only dead ones replay


async def test_replay_by_ids(store):
    await store.append([ev("a", id=i) for i in ("i1", "i2", "i3")])
    await _kill_all(store, "a")
    assert sorted(await store.replay(ReplayFilter(ids=("i1", "i3", "unknown")))) == ["i1", "i3"]
    assert [r.event_id for r in await store.dead_list(None, 0, 10)] == ["i2"]
    assert sorted(ids(await store.claim("a", 10, 60))) == ["i1", "i3"]


async def test_replay_by_received_time_window(store):
    now = time.time()
    await store.append(
        [
            ev("a", id="old", received_at=now - 7200),
            ev("a", id="mid", received_at=now - 3600),
            ev("a", id="new", received_at=now - 10),
        ]
    )
    await _kill_all(store, "a")
    window = ReplayFilter(since=now - 5000, until=now - 100)
    assert await store.replay(window) == ["mid"]
    assert await store.replay(ReplayFilter(since=now - 60)) == ["new"]
    assert await store.replay(ReplayFilter(until=now - 5000)) == ["old"]
    assert await store.dead_list(None, 0, 10) == []


async def test_replay_dry_run_changes_nothing(store):
    await store.append([ev("a", id="dry1"), ev("a", id="dry2")])
    await _kill_all(store, "a")
    matched = await store.replay(ReplayFilter(destination="a"), dry_run=True)
    assert sorted(matched) == ["dry1", "dry2"]
    assert (await dest_stats(store, "a"))["dead"] == 2
    assert await store.claim("a", 10, 60) == []


# -- pull leases ---------------------------------------------------------------------------


async def test_ack_lease_delivers_the_whole_claim_once(store):
    await store.append([ev("feed", id=f"p{i}") for i in range(3)])
    claims = await store.claim("feed", 10, 60)
    lease = claims[0].lease
    assert await store.ack_lease("other", lease) == []  # another destination's batch
    assert sorted(await store.ack_lease("feed", lease)) == ["p0", "p1", "p2"]
    assert await store.ack_lease("feed", lease) == []  # acked already
    s = await dest_stats(store, "feed")
    assert (s["leased"], s["delivered"]) == (0, 3)


async def test_ack_lease_after_expiry_and_reclaim_does_nothing(store):
    await store.append([ev("feed", id="p9")])
    old, new = await _expire_and_reclaim(store, "feed")
    assert await store.ack_lease("feed", old.lease) == []
    assert (await dest_stats(store, "feed"))["leased"] == 1
    assert await store.ack_lease("feed", new.lease) == ["p9"]


async def test_release_leases_frees_all_but_kept_destinations(store):
    await store.append([ev("hook", "feed", id="rl1"), ev("hook", id="rl2")])
    hook_claims = await store.claim("hook", 10, 3600)
    feed_claims = await store.claim("feed", 10, 3600)
    assert await store.release_leases(keep=["feed"]) == 2
    s = await dest_stats(store, "hook")
    assert (s["pending"], s["leased"]) == (2, 0)
    assert sorted(ids(await store.claim("hook", 10, 60))) == ["rl1", "rl2"]
    await store.ack(hook_claims)  # the previous run's claims are fenced off
    assert (await dest_stats(store, "hook"))["delivered"] == 0
    # The pull lease kept its expiry: not claimable, and its client can still ack it.
    assert await store.claim("feed", 10, 60) == []
    assert await store.ack_lease("feed", feed_claims[0].lease) == ["rl1"]


async def test_release_leases_keeps_every_kept_destination(store):
    """The daemon keeps all its pull destinations' leases at start-up, not only the first."""
    await store.append([ev("hook", "feed", "soap", id="rk1")])
    for name in ("hook", "feed", "soap"):
        await store.claim(name, 10, 3600)
    assert await store.release_leases(keep=["feed", "soap"]) == 1
    assert ids(await store.claim("hook", 10, 60)) == ["rk1"]
    assert await store.claim("feed", 10, 60) == []
    assert await store.claim("soap", 10, 60) == []


async def test_release_leases_with_nothing_kept(store):
    await store.append([ev("hook"), ev("feed")])
    await store.claim("hook", 10, 3600)
    await store.claim("feed", 10, 3600)
    assert await store.release_leases(keep=[]) == 2
    assert await store.release_leases(keep=[]) == 0


# -- purge ---------------------------------------------------------------------------------


async def test_purge_removes_finished_and_dead_but_keeps_pending(store):
    old = time.time() - 86400
    await store.append(
        [
            ev("a", id="done", received_at=old),
            ev("a", id="died", received_at=old),
            ev("a", "b", id="half", received_at=old),  # delivered to a, still pending for b
            ev("c", id="waiting", received_at=old, due_in=3600),
            ev(id="unrouted", received_at=old),
        ]
    )
    claims = {c.event_id: c for c in await store.claim("a", 10, 60)}
    await store.ack([claims["done"], claims["half"]])
    await store.dead([claims["died"]], "gone")
    # Everything just finished: a cutoff an hour ago removes no delivery.
    await store.purge(time.time() - 3600)
    s = await store.stats()
    assert (s.destinations["a"].delivered, s.destinations["a"].dead) == (2, 1)
    assert s.events == 4  # only the old unrouted event, which had no delivery, is gone
    assert await store.purge(time.time() + 1) > 0
    s = await store.stats()
    assert "a" not in s.destinations  # nothing of a's is left
    assert s.events == 2  # "half" and "waiting" still have pending deliveries
    assert s.unrouted == 0
    assert await store.dead_list(None, 0, 10) == []
    assert await store.purge(time.time() + 1) == 0
    assert ids(await store.claim("b", 10, 60)) == ["half"]  # its body is still there
    assert s.destinations["c"].pending == 1


async def test_purge_keeps_recent_events(store):
    await store.append([ev(id="fresh")])  # unrouted, received now
    assert await store.purge(time.time() - 60) == 0
    assert (await store.stats()).events == 1


# -- stats ---------------------------------------------------------------------------------


async def test_stats_counts_every_state(store):
    now = time.time()
    await store.append(
        [
            ev("a", id="s1", received_at=now - 100),
            ev("a", id="s2", received_at=now - 50),
            ev("a", id="s3", received_at=now - 10),
            ev("a", id="s4", received_at=now - 5),
            ev("a", "b", id="s5", received_at=now - 1),
            ev(id="s6"),
            ev(id="s7"),
        ]
    )
    empty = await store.stats()
    assert (empty.events, empty.unrouted) == (7, 2)
    claims = {c.event_id: c for c in await store.claim("a", 3, 60)}  # s1, s2, s3
    await store.ack([claims["s1"]])
    await store.dead([claims["s2"]], "x")
    s = (await store.stats()).as_dict()
    assert (s["events"], s["unrouted"]) == (7, 2)
    a = s["destinations"]["a"]
    assert (a["pending"], a["leased"], a["dead"], a["delivered"]) == (2, 1, 1, 1)
    assert a["oldest_pending_s"] == pytest.approx(5, abs=2)  # s4 is the oldest pending
    b = s["destinations"]["b"]
    assert (b["pending"], b["leased"], b["dead"], b["delivered"]) == (1, 0, 0, 0)
    assert b["oldest_pending_s"] == pytest.approx(1, abs=2)
    assert set(a) == {"pending", "leased", "dead", "delivered", "oldest_pending_s"}


async def test_stats_of_an_empty_store(store):
    s = (await store.stats()).as_dict()
    assert s == {"events": 0, "unrouted": 0, "destinations": {}}


# -- pause ---------------------------------------------------------------------------------


async def test_pause_resume_and_paused(store):
    assert await store.paused() == {}
    until = time.time() + 1800
    await store.pause("a", None)
    await store.pause("b", until)
    assert await store.paused() == {"a": None, "b": pytest.approx(until)}
    await store.pause("a", until + 1)  # pausing again changes when it resumes
    assert (await store.paused())["a"] == pytest.approx(until + 1)
    await store.pause("b", None)
    assert (await store.paused())["b"] is None
    await store.resume("a")
    await store.resume("not-paused")
    assert await store.paused() == {"b": None}


async def test_pause_survives_reopen(backend):
    s = backend.new()
    await s.open()
    try:
        await s.pause("a", None)
    finally:
        await s.close()
    s = backend.new()
    await s.open()
    try:
        assert await s.paused() == {"a": None}
    finally:
        await s.close()


# -- group commit and durability -----------------------------------------------------------


async def test_group_commit_many_appends_few_commits_and_all_durable(backend):
    s = backend.new()
    await s.open()
    try:
        before = s.commits
        results = await asyncio.gather(*(s.append([ev("a", id=f"g{i}")]) for i in range(200)))
        assert results == [[True]] * 200
        commits = s.commits - before
        assert 1 <= commits <= 20, f"{commits} commits for 200 appends"
    finally:
        await s.close()
    s = backend.new()
    await s.open()
    try:
        stats = await s.stats()
        assert stats.events == 200
        assert stats.destinations["a"].pending == 200
        assert sorted(ids(await s.claim("a", 1000, 60))) == sorted(f"g{i}" for i in range(200))
    finally:
        await s.close()


async def test_close_finishes_work_in_progress(backend):
    s = backend.new()
    await s.open()
    appends = [asyncio.ensure_future(s.append([ev("a", id=f"c{i}")])) for i in range(50)]
    await asyncio.sleep(0)  # the appends are queued for the writer
    await s.close()
    assert [a.result() for a in appends] == [[True]] * 50
    s = backend.new()
    await s.open()
    try:
        assert (await s.stats()).events == 50
    finally:
        await s.close()


async def test_closed_store_refuses_writes(backend):
    s = backend.new()
    await s.open()
    await s.close()
    with pytest.raises(StorageUnavailable, match="store is closed"):
        await s.append([ev("a")])


async def test_closed_store_refuses_outcomes(backend):
    """A dispatcher still finishing a send when the daemon stops gets a clear error, and
    its claim runs out and comes back after the restart."""
    s = backend.new()
    await s.open()
    await s.append([ev("a", id="late")])
    [c] = await s.claim("a", 1, 0.05)
    await s.close()
    for outcome in (
        s.ack([c]),
        s.retry([(c, time.time())], "503"),
        s.dead([c], "410"),
        s.release([c]),
    ):
        with pytest.raises(StorageUnavailable, match="store is closed"):
            await outcome
    s = backend.new()
    await s.open()
    try:
        again: list[Claimed] = []

        async def reclaimed() -> bool:
            again.extend(await s.claim("a", 1, 60))
            return bool(again)

        await wait_for(reclaimed, 5, "the unfinished claim to come back")
        assert (again[0].event_id, again[0].attempts) == ("late", 2)
    finally:
        await s.close()


async def test_newer_schema_is_refused(backend):
    s = backend.new()
    await s.open()
    await s.close()
    backend.make_schema_newer()
    refused = backend.new()
    with pytest.raises(StorageUnavailable, match="newer"):
        await refused.open()
    await refused.close()  # nothing to close, but must not fail


async def test_release_hands_back_unattempted_claims(store):
    await store.append([ev("a", id="rel1", due_in=-30)])
    [c] = await store.claim("a", 1, 3600)
    await store.release([c])
    s = await dest_stats(store, "a")
    assert (s["pending"], s["leased"]) == (1, 0)
    [again] = await store.claim("a", 1, 3600)  # due now, not at its lease's end
    assert again.attempts == c.attempts  # the released claim was never an attempt
    await store.release([c])  # fenced: the old claim cannot release the new one
    assert (await dest_stats(store, "a"))["leased"] == 1


# -- first flag ----------------------------------------------------------------------------


def _with_first(event: NewEvent, email: str, sendid: str = "s1") -> NewEvent:
    return NewEvent(
        event.id,
        event.event_type,
        event.received_at,
        event.body,
        event.deliveries,
        first_key=(event.event_type, email, sendid),
    )


async def test_first_is_true_only_for_the_first_event_of_its_type_email_and_sendid(store):
    batch = [_with_first(ev("a", event_type="engine_open"), "x@example.com") for _ in range(2)]
    batch.append(_with_first(ev("a", event_type="engine_open"), "y@example.com"))
    batch.append(_with_first(ev("a", event_type="engine_click"), "x@example.com"))
    await store.append(batch)
    await store.append([_with_first(ev("a", event_type="engine_open"), "x@example.com")])
    claims = await store.claim("a", 10, 30)
    first = {c.event_id: orjson.loads(c.body)["first"] for c in claims}
    assert [first[e.id] for e in batch] == [True, False, True, True]
    assert list(first.values()).count(False) == 2  # the later open of x is not first either


# -- PostgreSQL only: the database can go away -----------------------------------------------


async def test_an_ack_made_while_postgres_is_down_is_kept_until_it_is_back(cluster):
    """The send happened: the ack keeps trying while the database restarts, so the event is
    not sent a second time when its lease runs out."""
    store = PostgresStore(pg.fresh_schema_dsn(cluster.dsn), pool_size=2)
    await store.open()
    try:
        await store.append([ev("a", id="down1")])
        [c] = await store.claim("a", 1, 3600)
        cluster.stop()
        try:
            ack = asyncio.ensure_future(store.ack([c]))
            await asyncio.sleep(0)  # queued; the flusher tries while the server is down
        finally:
            # pg_ctl takes about a second to start it: the flusher's first tries fail.
            await asyncio.to_thread(cluster.start)
        await asyncio.wait_for(ack, 20)
        s = await dest_stats(store, "a")
        assert (s["leased"], s["delivered"]) == (0, 1)
    finally:
        await store.close()


async def _claim_once_back(store: Store, destination: str) -> list[Claimed]:
    """Claim, trying again while the restarted server's pool still fails."""
    answers: list[list[Claimed]] = []

    async def answered() -> bool:
        try:
            answers.append(await store.claim(destination, 10, 3600))
        except StorageUnavailable:
            return False
        return True

    await wait_for(answered, 20, "postgres to answer claims again")
    return answers[0]


async def test_claims_fail_while_postgres_is_down_and_work_after_each_restart(cluster):
    """A claim whose answer may have been lost is handed back by the next claim; the store
    must come through more than one outage doing so."""
    store = PostgresStore(pg.fresh_schema_dsn(cluster.dsn), pool_size=2)
    await store.open()
    try:
        await store.append([ev("a", id="lc1", due_in=-2), ev("a", id="lc2")])
        assert ids(await store.claim("a", 1, 3600)) == ["lc1"]
        got = []
        for _ in range(2):
            cluster.stop()
            try:
                with pytest.raises(StorageUnavailable):
                    await store.claim("a", 10, 3600)
            finally:
                await asyncio.to_thread(cluster.start)
            got.append(ids(await _claim_once_back(store, "a")))
        assert got == [["lc2"], []]
        assert (await dest_stats(store, "a"))["leased"] == 2
    finally:
        await store.close()


async def test_a_node_cannot_ack_a_delivery_another_node_took_over():
    """Fencing across nodes: each node's tokens come from its own block, from the first."""
    dsn = pg.fresh_schema_dsn()
    one, two = PostgresStore(dsn, node="one"), PostgresStore(dsn, node="two")
    await one.open()
    await two.open()
    try:
        await one.append([ev("a", id="nt1")])
        [old] = await one.claim("a", 1, 0.05)

        async def expired() -> bool:
            return (await dest_stats(two, "a"))["pending"] == 1

        await wait_for(expired, 5, "the lease to run out")
        [new] = await two.claim("a", 1, 60)  # each node's first claim
        assert new.lease != old.lease
        await one.ack([old])  # the first node's late success report
        s = await dest_stats(two, "a")
        assert (s["leased"], s["delivered"]) == (1, 0)
        await two.ack([new])
        assert (await dest_stats(one, "a"))["delivered"] == 1
    finally:
        await one.close()
        await two.close()


async def test_an_ack_the_database_refuses_fails_and_the_next_ack_still_works():
    """A refused ack reaches its dispatcher (which then lets the lease run out) instead of
    leaving it waiting for ever, and the ack flusher carries on for the next one."""
    dsn = pg.fresh_schema_dsn()
    store = PostgresStore(dsn)
    await store.open()
    try:
        await store.append([ev("a", id="rf1"), ev("a", id="rf2")])
        first, second = await store.claim("a", 10, 3600)
        pg.execute("ALTER TABLE deliveries RENAME TO deliveries_away", dsn)
        try:
            with pytest.raises(asyncpg.UndefinedTableError):
                await asyncio.wait_for(store.ack([first]), 10)
        finally:
            pg.execute("ALTER TABLE deliveries_away RENAME TO deliveries", dsn)
        await asyncio.wait_for(store.ack([second]), 10)
        s = await dest_stats(store, "a")
        assert (s["leased"], s["delivered"]) == (1, 1)
    finally:
        await store.close()
