"""The client-pull API: lease a batch, ack it, leases run out, auth and limits."""

from __future__ import annotations

import asyncio
import dataclasses

import aiohttp
import pytest

from relay.config import ServerConfig, load
from relay.daemon import Daemon

from ..helpers import base_toml, wait_for

TOKEN = "feed-secret-token"
PULL_TOML = (
    base_toml()
    + f'[destinations.feed]\ntype = "pull"\ntokens = ["{TOKEN}"]\nlease = "500ms"\n'
    + '[destinations.other]\ntype = "pull"\ntokens = ["other-token"]\n'
    + '[[routes]]\nevents = ["*"]\ndestinations = ["feed"]\n'
)
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def events(n: int, prefix: str = "e") -> list[dict]:
    return [
        {"id": f"{prefix}{i}", "event_type": "bounce", "email": f"u{i}@example.com"}
        for i in range(n)
    ]


async def pull(relay, max: int | str = 100, dest: str = "feed", headers=AUTH) -> tuple[int, dict]:
    async with relay.http.get(
        f"{relay.url}/v1/pull/{dest}", params={"max": str(max)}, headers=headers
    ) as resp:
        return resp.status, await resp.json()


async def ack(relay, batch_id, dest: str = "feed", headers=AUTH) -> tuple[int, dict]:
    async with relay.http.post(
        f"{relay.url}/v1/pull/{dest}/ack", json={"batch_id": batch_id}, headers=headers
    ) as resp:
        return resp.status, await resp.json()


@pytest.fixture
async def relay(make_relay):
    return await make_relay(PULL_TOML)


async def test_lease_returns_bare_events_and_ack_removes_them(relay):
    assert (await relay.post_events(events(5))).status == 202
    status, first = await pull(relay, max=3)
    assert status == 200
    assert isinstance(first["batch_id"], str) and first["batch_id"]
    assert len(first["events"]) == 3
    for event in first["events"]:  # the event itself, as ingested: no envelope
        assert event["event_type"] == "bounce"
        assert event["email"] == f"u{event['id'][1:]}@example.com"
    first_ids = {e["id"] for e in first["events"]}

    # Leased events are not handed out twice while the lease holds.
    status, second = await pull(relay, max=100)
    assert status == 200
    second_ids = {e["id"] for e in second["events"]}
    assert len(second_ids) == 2 and not first_ids & second_ids
    assert second["batch_id"] != first["batch_id"]

    assert await ack(relay, first["batch_id"]) == (200, {"acked": 3})
    assert await ack(relay, second["batch_id"]) == (200, {"acked": 2})
    assert first_ids | second_ids == {f"e{i}" for i in range(5)}

    # Acked events are gone for good, even after the lease time has passed.
    await asyncio.sleep(0.6)  # past the 500 ms lease, when an unacked event would return
    assert await pull(relay) == (200, {"batch_id": None, "events": []})
    stats = (await relay.store.stats()).destinations["feed"]
    assert (stats.pending, stats.leased, stats.delivered) == (0, 0, 5)


async def test_a_second_ack_of_the_same_batch_is_404(relay):
    await relay.post_events(events(1))
    _, batch = await pull(relay)
    assert (await ack(relay, batch["batch_id"]))[0] == 200
    status, body = await ack(relay, batch["batch_id"])
    assert status == 404 and "error" in body


async def test_unacked_lease_returns_to_the_queue_with_a_new_batch_id(relay):
    await relay.post_events(events(2, "lost"))
    _, first = await pull(relay)
    assert {e["id"] for e in first["events"]} == {"lost0", "lost1"}
    assert (await pull(relay))[1]["events"] == []  # held by the lease

    again: dict = {}

    async def leased_again() -> bool:
        again.update((await pull(relay))[1])
        return bool(again["events"])

    await wait_for(leased_again, 5, "the expired lease to be leased again")
    assert {e["id"] for e in again["events"]} == {"lost0", "lost1"}
    assert again["batch_id"] != first["batch_id"]

    # The client that let its lease run out cannot ack the events out from under the new one.
    status, body = await ack(relay, first["batch_id"])
    assert status == 404 and "error" in body
    assert (await relay.store.stats()).destinations["feed"].leased == 2
    assert await ack(relay, again["batch_id"]) == (200, {"acked": 2})
    assert (await relay.store.stats()).destinations["feed"].delivered == 2


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": "Bearer other-token"},  # another destination's token
        {"Authorization": TOKEN},  # no scheme
        {"Authorization": f"Basic {TOKEN}"},
    ],
    ids=["missing", "wrong", "other-destination", "no-scheme", "basic"],
)
async def test_pull_and_ack_need_the_destination_token(relay, headers):
    await relay.post_events(events(1))
    status, body = await pull(relay, headers=headers)
    assert status == 401 and "error" in body
    status, body = await ack(relay, "12345", headers=headers)
    assert status == 401 and "error" in body
    # Nothing was leased by the refused requests.
    assert (await pull(relay))[1]["events"][0]["id"] == "e0"


async def test_unknown_destination_answers_like_a_wrong_token(relay):
    """Not a 404: that would tell a stranger which destination names exist."""
    status, body = await pull(relay, dest="nope")
    assert (status, body) == (401, {"error": "invalid bearer token"})
    status, body = await ack(relay, "1", dest="nope")
    assert (status, body) == (401, {"error": "invalid bearer token"})


@pytest.mark.parametrize("max", ["0", "10001", "-1", "abc", "1.5", ""])
async def test_max_out_of_range_is_400(relay, max):
    await relay.post_events(events(1))
    status, body = await pull(relay, max=max)
    assert status == 400
    assert "max" in body["error"]
    assert (await relay.store.stats()).destinations["feed"].leased == 0


@pytest.mark.parametrize(
    "payload",
    [b"not json", b"[]", b"{}", b'{"batch_id": 12}', b'{"batch_id": "abc"}'],
    ids=["not-json", "array", "no-batch-id", "number", "not-a-batch-id"],
)
async def test_malformed_ack_is_400(relay, payload):
    async with relay.http.post(f"{relay.url}/v1/pull/feed/ack", data=payload, headers=AUTH) as resp:
        assert resp.status == 400
        assert "batch_id" in (await resp.json())["error"]


async def test_ack_of_a_batch_id_never_issued_is_404(relay):
    await relay.post_events(events(1))
    _, batch = await pull(relay)
    status, _ = await ack(relay, str(int(batch["batch_id"]) + 1))
    assert status == 404
    assert (await relay.store.stats()).destinations["feed"].leased == 1


async def test_ten_thousand_events_in_one_batch(relay):
    batch = events(10_000, "big")
    resp = await relay.post_events(batch)
    assert resp.status == 202
    status, leased = await pull(relay, max=10_000)
    assert status == 200
    assert sorted(e["id"] for e in leased["events"]) == sorted(e["id"] for e in batch)
    assert await ack(relay, leased["batch_id"]) == (200, {"acked": 10_000})
    assert (await pull(relay, max=10_000))[1]["events"] == []
    lines = relay.dispatch_lines()
    [leased_line] = [x for x in lines if x["outcome"] == "leased"]
    [acked_line] = [x for x in lines if x["outcome"] == "acked"]
    for line in (leased_line, acked_line):
        assert line["destination"] == "feed"
        assert line["count"] == 10_000
        assert len(line["event_ids"]) == 10_000
        assert line["ts"].endswith("Z")
    assert leased_line["attempt"] == 1


async def test_pull_respects_max_and_delivers_each_event_once(relay):
    await relay.post_events(events(25, "m"))
    seen: list[str] = []
    while batch := (await pull(relay, max=10))[1]["events"]:
        assert len(batch) <= 10
        seen += [e["id"] for e in batch]
    assert sorted(seen) == sorted(f"m{i}" for i in range(25))


async def test_embedded_defaults_route_every_event_to_the_default_pull_destination(
    tmp_path, monkeypatch
):
    """No config file: loopback, relay.db in the working directory, no auth, `default`."""
    monkeypatch.delenv("RELAY_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    defaults = load(None)
    # The only change: an ephemeral port instead of 8080, which may be taken on this box.
    config = dataclasses.replace(defaults, server=dataclasses.replace(ServerConfig(), port=0))
    assert config.server.host == defaults.server.host == "127.0.0.1"
    daemon = Daemon(config, None)
    await daemon.start()
    try:
        url = f"http://127.0.0.1:{daemon.port}"
        sample = [
            {"id": "d1", "event_type": "bounce", "email": "a@example.com"},
            {
                "id": "d2",
                "event_type": "engine_click",
                "email": "a@example.com",
                "click_url": "https://x.test/",
            },
            {"id": "d3", "event_type": "sms_failed", "phone": "+15550100"},
            {"id": "d4", "event_type": "delivery", "sendid": "s1"},
        ]
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{url}/v1/events", json=sample) as resp:
                assert resp.status == 202
            async with http.get(f"{url}/v1/pull/default?max=100") as resp:
                assert resp.status == 200
                got = await resp.json()
            assert sorted(e["id"] for e in got["events"]) == ["d1", "d2", "d3", "d4"]
            async with http.post(
                f"{url}/v1/pull/default/ack", json={"batch_id": got["batch_id"]}
            ) as resp:
                assert resp.status == 200
        assert (tmp_path / "relay.db").exists()
    finally:
        await daemon.stop()
