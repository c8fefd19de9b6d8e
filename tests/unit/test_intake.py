"""`Intake` alone: a fake store, a real router and a real spool file.

The door every event comes in by: a client's batch is all or nothing, a busy writer sheds
load before anything is built, what is stored is counted apart from duplicates, only the
destinations that got work are woken, and a tracking event survives the store being away.
"""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest

from relay.config import HttpDestination, Route
from relay.domain.routing import Router
from relay.intake import Intake, Invalid, Overloaded
from relay.models import NewEvent
from relay.store import StorageUnavailable
from relay.store.spool import Spool

DESTS = {"crm": HttpDestination("crm", "http://127.0.0.1:9/")}
ROUTER = Router((Route(frozenset({"bounce"}), ("crm",)),), DESTS)


class FakeStore:
    def __init__(self) -> None:
        self.queued_events = 0
        self.seen: set[str] = set()
        self.down = False

    async def append(self, events: list[NewEvent]) -> list[bool]:
        if self.down:
            raise StorageUnavailable("away")
        stored = []
        for e in events:
            stored.append(e.id not in self.seen)
            self.seen.add(e.id)
        return stored


class Counts:
    def __init__(self) -> None:
        self.calls: list[tuple[str, object, str]] = []

    def ingested(self, batch: list[NewEvent], source: str) -> None:
        self.calls.append(("ingested", [e.id for e in batch], source))

    def duplicates(self, n: int, source: str) -> None:
        self.calls.append(("duplicates", n, source))


def bounce(i: int, **extra: object) -> dict:
    return {"event_type": "bounce", "email": f"a{i}@example.com", "id": f"b{i}", **extra}


def intake(store: FakeStore, counts: Counts, woken: list, spool: Spool | None = None) -> Intake:
    return Intake(store, ROUTER, counts, woken.append, spool)


async def test_a_batch_is_routed_stored_counted_and_wakes_its_destinations() -> None:
    store, counts, woken = FakeStore(), Counts(), []
    door = intake(store, counts, woken)
    batch = door.accept([bounce(1), bounce(2), bounce(1)], time.time(), 100)
    assert [e.deliveries[0][0] for e in batch] == ["crm", "crm", "crm"]
    assert orjson.loads(batch[0].body)["email"] == "a1@example.com"
    assert await door.commit(batch, "api") == 2  # b1 twice in one request: stored once
    assert counts.calls == [("ingested", ["b1", "b2"], "api"), ("duplicates", 1, "api")]
    assert door.ingested["api"] == 2 and door.duplicates["api"] == 1
    assert woken == [{"crm"}]


async def test_one_bad_item_refuses_the_whole_batch_and_a_busy_writer_sheds_load() -> None:
    store, counts, woken = FakeStore(), Counts(), []
    door = intake(store, counts, woken)
    with pytest.raises(Invalid) as refused:
        door.accept([bounce(1), {"event_type": "nope"}], time.time(), 100)
    assert refused.value.problems[0].index == 1
    store.queued_events = 101
    with pytest.raises(Overloaded):
        door.accept([bounce(1)], time.time(), 100)
    assert counts.calls == [] and woken == []


async def test_a_tracking_event_goes_to_the_spool_while_the_store_is_away(tmp_path: Path) -> None:
    store, counts, woken = FakeStore(), Counts(), []
    spool = Spool(tmp_path / "node.db.spool")
    await spool.open()
    door = intake(store, counts, woken, spool)
    try:
        event = {"event_type": "engine_open", "id": "o1", "email": "a@example.com"}
        store.down = True
        assert await door.keep([door.event(event, time.time(), first=True)], "pixel")
        assert spool.count == 1 and counts.calls == []
        store.down = False
        await door.drain_spool()
        assert spool.count == 0 and store.seen == {"o1"}
        assert counts.calls == [("ingested", ["o1"], "spool")]
    finally:
        door.close()


async def test_without_a_spool_a_tracking_event_is_lost_and_said_so() -> None:
    store, counts, woken = FakeStore(), Counts(), []
    door = intake(store, counts, woken)
    store.down = True
    event = {"event_type": "engine_open", "id": "o1", "email": "a@example.com"}
    assert await door.keep([door.event(event, time.time(), first=True)], "pixel") is False
