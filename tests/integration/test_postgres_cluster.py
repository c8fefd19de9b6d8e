"""Two relay nodes on one PostgreSQL database form one relay."""

from __future__ import annotations

import asyncio
import time

import pytest

from .. import pg
from ..helpers import wait_for

TOKEN = "feed-token"


def node_toml(dsn: str, hook_url: str) -> str:
    return (
        '[server]\nlisten = "127.0.0.1:0"\n'
        f'[storage]\nbackend = "postgres"\ndsn = "{dsn}"\npool_size = 4\n'
        '[log]\ndispatch = "dispatch.log"\n'
        f'[destinations.hook]\ntype = "http"\nurl = "{hook_url}"\n'
        f'[destinations.feed]\ntype = "pull"\ntokens = ["{TOKEN}"]\nlease = "30s"\n'
        '[[routes]]\nevents = ["*"]\ndestinations = ["hook", "feed"]\n'
    )


@pytest.fixture
async def nodes(make_relay, receiver, monkeypatch):
    toml = node_toml(pg.fresh_schema_dsn(), receiver.url)
    monkeypatch.setenv("RELAY_NODE", "node-1")
    one = await make_relay(toml, "n1")
    monkeypatch.setenv("RELAY_NODE", "node-2")
    two = await make_relay(toml, "n2")
    return one, two


def batch(prefix: str, n: int) -> list[dict]:
    return [
        {"id": f"{prefix}{i}", "event_type": "bounce", "email": f"u{i}@example.com"}
        for i in range(n)
    ]


async def test_events_ingested_on_either_node_are_delivered(nodes, receiver):
    one, two = nodes
    sent: set[str] = set()
    for i in range(10):
        node, prefix = (one, "a") if i % 2 else (two, "b")
        events = batch(f"{prefix}{i}-", 20)
        assert (await node.post_events(events)).status == 202
        sent |= {e["id"] for e in events}
    # A re-sent id on the other node is a no-op: stored once across nodes.
    assert (await two.post_events(batch("a1-", 20))).status == 202

    await wait_for(lambda: set(receiver.delivered_ids()) >= sent, 20, "every event delivered")
    delivered = receiver.delivered_ids()
    assert set(delivered) == sent
    assert len(delivered) == len(sent), "a normal run delivers each event once"

    async def all_acked() -> bool:
        stats = (await one.store.stats()).destinations["hook"]
        return (stats.delivered, stats.pending, stats.leased) == (len(sent), 0, 0)

    await wait_for(all_acked, 10, "every delivery acked in the shared database")
    nodes_logged = {line.get("node") for n in (one, two) for line in n.dispatch_lines()}
    assert nodes_logged <= {"node-1", "node-2"} and nodes_logged
    assert (await two.store.stats()).events == len(sent)


async def test_a_pull_lease_taken_on_one_node_is_acked_on_the_other(nodes):
    one, two = nodes
    assert (await one.post_events(batch("p", 5))).status == 202
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with one.http.get(f"{one.url}/v1/pull/feed", params={"max": "10"}, headers=auth) as r:
        assert r.status == 200
        leased = await r.json()
    assert len(leased["events"]) == 5
    # The other node does not hand the leased events out again.
    async with two.http.get(f"{two.url}/v1/pull/feed", params={"max": "10"}, headers=auth) as r:
        assert (await r.json())["events"] == []
    body = {"batch_id": leased["batch_id"]}
    async with two.http.post(f"{two.url}/v1/pull/feed/ack", json=body, headers=auth) as r:
        assert (r.status, await r.json()) == (200, {"acked": 5})
    async with one.http.post(f"{one.url}/v1/pull/feed/ack", json=body, headers=auth) as r:
        assert r.status == 404  # acked already, from the other node
    stats = (await one.store.stats()).destinations["feed"]
    assert (stats.delivered, stats.leased) == (5, 0)


async def test_a_pause_made_through_one_node_reaches_both(nodes):
    one, two = nodes
    await one.store.pause("hook", None)
    await wait_for(
        lambda: all("hook" in n.runtime.paused for n in (one, two)),
        5,
        "both nodes to pick up the pause",
    )
    await two.store.resume("hook")
    await wait_for(
        lambda: not any("hook" in n.runtime.paused for n in (one, two)),
        5,
        "both nodes to pick up the resume",
    )


async def test_an_unreachable_database_is_storage_unavailable():
    from relay.store import StorageUnavailable
    from relay.store.postgres import PostgresStore

    from ..helpers import free_port

    store = PostgresStore(f"postgresql://postgres@127.0.0.1:{free_port()}/relay")
    with pytest.raises(StorageUnavailable):
        await store.open()
    await store.close()
    with pytest.raises(StorageUnavailable):
        await store.append([])


async def test_a_dropped_connection_is_storage_unavailable_then_recovers():
    from relay.store import StorageUnavailable
    from relay.store.postgres import PostgresStore

    store = PostgresStore(pg.fresh_schema_dsn() + "&application_name=relay-drop", pool_size=1)
    await store.open()
    try:
        await store.pause("a", None)
        pg.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = 'relay-drop'"
        )
        outcomes = []
        for _ in range(2):  # the pool's broken connection fails once, then is replaced
            try:
                outcomes.append(await store.paused())
            except StorageUnavailable:
                outcomes.append("503")
        assert outcomes[-1] == {"a": None}
    finally:
        await store.close()


async def test_two_stores_claiming_together_never_take_the_same_delivery():
    import asyncio

    from relay.models import NewEvent
    from relay.store.postgres import PostgresStore

    dsn = pg.fresh_schema_dsn()
    a, b = PostgresStore(dsn, node="a"), PostgresStore(dsn, node="b")
    await a.open()
    await b.open()
    try:
        now = time.time()
        events = [
            NewEvent(f"c{i}", "bounce", now, b"{}", (("hook", now - 1),)) for i in range(2000)
        ]
        assert sum(await a.append(events[:1000])) + sum(await b.append(events[1000:])) == 2000
        taken: list[str] = []

        async def drain(store: PostgresStore) -> None:
            while claims := await store.claim("hook", 37, 60):
                taken.extend(c.event_id for c in claims)
                await store.ack(claims)

        await asyncio.gather(drain(a), drain(b), drain(a), drain(b))
        assert len(taken) == 2000 and len(set(taken)) == 2000
    finally:
        await a.close()
        await b.close()


async def test_first_holds_across_nodes():
    import asyncio

    import orjson

    from relay.models import NewEvent
    from relay.store.postgres import PostgresStore

    dsn = pg.fresh_schema_dsn()
    stores = [PostgresStore(dsn, node=f"n{i}") for i in range(3)]
    for s in stores:
        await s.open()
    try:
        now = time.time()
        key = ("engine_open", "x@example.com", "s1")

        def opened(i: int) -> NewEvent:
            body = b'{"id":"o%d"}' % i
            return NewEvent(f"o{i}", "engine_open", now, body, (("a", now - 1),), first_key=key)

        await asyncio.gather(*(s.append([opened(i)]) for i, s in enumerate(stores * 4)))
        claims = await stores[0].claim("a", 100, 60)
        flags = [orjson.loads(c.body)["first"] for c in claims]
        assert len(flags) == 12 and flags.count(True) == 1
    finally:
        for s in stores:
            await s.close()


def test_statement_cache_size_is_taken_out_of_the_dsn():
    from relay.store.postgres import _statement_cache

    assert _statement_cache("postgresql://u@h/db?statement_cache_size=0&sslmode=disable") == (
        "postgresql://u@h/db?sslmode=disable",
        0,
    )
    assert _statement_cache("postgresql://u@h/db") == ("postgresql://u@h/db", 100)


async def test_ingest_on_one_node_wakes_the_other_nodes_dispatcher(
    make_relay, receiver, monkeypatch
):
    import relay.dispatch.dispatcher

    # only a NOTIFY can be quick
    monkeypatch.setattr(relay.dispatch.dispatcher, "IDLE_POLL_S", 30.0)
    dsn = pg.fresh_schema_dsn()
    # Node 1 sends "hook" to the receiver; node 2 only ingests (its "hook" is a pull feed).
    sender = await make_relay(node_toml(dsn, receiver.url), "n1")
    ingester = await make_relay(
        node_toml(dsn, receiver.url).replace(
            f'type = "http"\nurl = "{receiver.url}"', f'type = "pull"\ntokens = ["{TOKEN}"]'
        ),
        "n2",
    )
    await sender.runtime.refresh_paused()
    await asyncio.sleep(0.5)  # both dispatchers are idle now, for up to 30 s
    started = time.monotonic()
    assert (await ingester.post_events(batch("w", 3))).status == 202
    await wait_for(lambda: len(receiver.delivered_ids()) == 3, 5, "the woken node to deliver")
    assert time.monotonic() - started < 3
