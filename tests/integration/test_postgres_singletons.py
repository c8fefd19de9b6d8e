"""Cluster-wide singletons: with two nodes on one PostgreSQL, exactly one builds
each digest of a period and runs retention; another takes over when the holder goes."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import aiohttp
import asyncpg
import orjson
import pytest

from relay.daemon import PURGE_EVERY_S
from relay.store.postgres import SINGLETON_RENEW_S, SINGLETON_TTL_S, PostgresStore

from .. import pg
from ..helpers import DaemonProcess, free_port, wait_for
from ..mailftp import BreakingPathIO, FtpServer, Mailbox, attached_events, smtp_server

PERIOD_S = 2
SPLIT = 5  # max_events_per_message: a period's digest is several messages, sent in a row


class SlowMailbox(Mailbox):
    """Takes 0.3 s per message: a round lasts long enough for another node to butt in."""

    async def handle_DATA(self, server, session, envelope) -> str:
        await asyncio.sleep(0.3)
        return await super().handle_DATA(server, session, envelope)


def node_toml(dsn: str, smtp_port: int, retention: str = "7d") -> str:
    return (
        '[server]\nlisten = "127.0.0.1:0"\n'
        f'[storage]\nbackend = "postgres"\ndsn = "{dsn}"\npool_size = 4\n'
        f'retention = "{retention}"\n'
        '[log]\ndispatch = "dispatch.log"\n'
        f'[destinations.mail]\ntype = "email"\nhost = "127.0.0.1"\nport = {smtp_port}\n'
        'from = "relay@example.com"\nto = ["ops@example.com"]\ntimeout = "5s"\n'
        f'digest = "{PERIOD_S}s"\nmax_events_per_message = {SPLIT}\n'
        '[[routes]]\nevents = ["*"]\ndestinations = ["mail"]\n'
    )


def events(prefix: str, n: int) -> list[dict]:
    return [
        {"event_type": "bounce", "email": f"u{i}@example.com", "id": f"{prefix}-{i}"}
        for i in range(n)
    ]


def delivered_lines(tmp_path: Path) -> int:
    """Delivered lines in both nodes' dispatch logs (n1/, n2/)."""
    total = 0
    for node in ("n1", "n2"):
        path = tmp_path / node / "dispatch.log"
        if path.exists():
            for line in map(orjson.loads, path.read_bytes().splitlines()):
                if line["outcome"] == "delivered":
                    total += line.get("count") or 1  # an upload's line counts its events
    return total


async def _start_of_a_period() -> None:
    while time.time() % PERIOD_S > 0.3:
        await asyncio.sleep(0.05)


async def test_two_nodes_build_each_digest_on_one_node(make_relay, monkeypatch, tmp_path):
    box = SlowMailbox()
    dsn = pg.fresh_schema_dsn()
    with smtp_server(box) as port:
        monkeypatch.setenv("RELAY_NODE", "node-1")
        one = await make_relay(node_toml(dsn, port), "n1")
        monkeypatch.setenv("RELAY_NODE", "node-2")
        two = await make_relay(node_toml(dsn, port), "n2")
        for period in range(2):
            await _start_of_a_period()
            assert (await one.post_events(events(f"p{period}a", 10))).status == 202
            assert (await two.post_events(events(f"p{period}b", 10))).status == 202
            n = 20 // SPLIT * (period + 1)
            await wait_for(lambda n=n: len(box.messages) >= n, PERIOD_S + 8, "the digest")
        # Every event acked means nothing is left to send: no further message can come.
        await wait_for(lambda: delivered_lines(tmp_path) == 40, 10, "all 40 events acked")
    sent = [e["id"] for m in box.messages for e in attached_events(m)]
    expected = [e["id"] for p in range(2) for s in "ab" for e in events(f"p{p}{s}", 10)]
    assert sorted(sent) == sorted(expected), "every event in one message, once"
    assert len(box.messages) == 2 * 20 // SPLIT
    logs = [(tmp_path / n / "dispatch.log").read_text().count('"delivered"') for n in ("n1", "n2")]
    assert sorted(logs) == [0, 40], f"the digests were built on both nodes: {logs}"


async def test_two_nodes_upload_one_file_per_period(make_relay, monkeypatch, tmp_path):
    root = tmp_path / "ftp-root"
    root.mkdir()
    server = FtpServer(root)
    await server.start_on()
    dsn = pg.fresh_schema_dsn()
    toml = (
        '[server]\nlisten = "127.0.0.1:0"\n'
        f'[storage]\nbackend = "postgres"\ndsn = "{dsn}"\npool_size = 4\n'
        '[log]\ndispatch = "dispatch.log"\n'
        f'[destinations.logs]\ntype = "ftp"\nhost = "127.0.0.1"\nport = {server.server_port}\n'
        'username = "relay"\npassword = "s3cret"\ntimeout = "5s"\n'
        f'upload_every = "{PERIOD_S}s"\nfilename = "log-{{seq}}.jsonl"\n'
        '[[routes]]\nevents = ["*"]\ndestinations = ["logs"]\n'
    )
    try:
        monkeypatch.setenv("RELAY_NODE", "node-1")
        one = await make_relay(toml, "n1")
        monkeypatch.setenv("RELAY_NODE", "node-2")
        two = await make_relay(toml, "n2")
        for period in range(2):
            await _start_of_a_period()
            assert (await one.post_events(events(f"p{period}a", 10))).status == 202
            assert (await two.post_events(events(f"p{period}b", 10))).status == 202
            await wait_for(lambda p=period: len(server.files()) > p, PERIOD_S + 5, "the file")
        # A file is stored before its events are acked: with all 40 acked, every file is in.
        await wait_for(lambda: delivered_lines(tmp_path) == 40, 10, "all 40 events acked")
        files = server.files()
    finally:
        BreakingPathIO.breaks = 0
        await server.close()
    assert len(files) == 2, f"one file per period: {sorted(files)}"
    for period, name in enumerate(sorted(files)):
        ids = {orjson.loads(line)["id"] for line in files[name].splitlines()}
        assert ids == {e["id"] for s in "ab" for e in events(f"p{period}{s}", 10)}


async def test_one_node_leads_and_another_takes_over_when_it_goes():
    dsn = pg.fresh_schema_dsn()
    one, two = PostgresStore(dsn, node="node-1"), PostgresStore(dsn, node="node-2")
    await one.open()
    await two.open()
    try:
        assert await one.lead("retention")
        assert not await two.lead("retention")
        assert await one.lead("retention")  # renewing: still the holder
        assert await two.lead("periodic:mail")  # each singleton on its own
        assert not await one.lead("periodic:mail")
        await one.close()  # a clean stop hands its singletons over at once
        assert await two.lead("retention")
    finally:
        await one.close()
        await two.close()


async def test_a_node_takes_over_the_digest_when_its_holder_is_killed(tmp_path):
    """kill -9 of the node that builds the digests: its lease row stays behind, unrenewed.
    The other node sends the next digest once the row has run out, not before."""
    box = Mailbox()
    dsn = pg.fresh_schema_dsn()
    with smtp_server(box) as smtp_port:
        one, two = daemons = two_nodes(tmp_path, node_toml(dsn, smtp_port))
        try:
            await one.start(env={"RELAY_NODE": "node-1"})
            assert await post(one.url, events("first", 3)) == 202
            await wait_for(lambda: delivered_lines(tmp_path) == 3, PERIOD_S + 8, "node-1's digest")
            await two.start(env={"RELAY_NODE": "node-2"})
            assert one.kill(signal.SIGKILL) == -signal.SIGKILL
            killed = time.monotonic()
            assert await post(two.url, events("after", 3)) == 202
            await wait_for(
                lambda: delivered_lines(tmp_path) == 6,
                SINGLETON_TTL_S + PERIOD_S + 15,
                "node-2 to send the digest after the holder's lease ran out",
            )
            # node-1 renewed its row at most SINGLETON_RENEW_S before it died.
            assert time.monotonic() - killed >= SINGLETON_TTL_S - SINGLETON_RENEW_S - 1
        finally:
            stop(daemons)
    assert sorted(e["id"] for m in box.messages for e in attached_events(m)) == sorted(
        e["id"] for e in events("first", 3) + events("after", 3)
    )
    second = (tmp_path / "n2" / "dispatch.log").read_text()
    assert second.count('"delivered"') == 3 and "after-0" in second


@pytest.mark.timeout(120)
async def test_a_node_takes_over_retention_when_its_holder_is_killed(tmp_path):
    """kill -9 of the node that runs retention: its lease row stays behind, unrenewed. The
    other node purges the delivered rows past retention once the row has run out, not before."""
    box = Mailbox()
    dsn = pg.fresh_schema_dsn()
    db = await asyncpg.connect(dsn)

    async def holder() -> str | None:
        return await db.fetchval("SELECT node FROM singletons WHERE name = 'retention'")

    async def rows() -> tuple[int, int]:
        """Events, and delivered deliveries (moved out of `deliveries` once delivered)."""
        return (
            await db.fetchval("SELECT count(*) FROM events"),
            await db.fetchval("SELECT count(*) FROM delivered"),
        )

    try:
        with smtp_server(box) as smtp_port:
            one, two = daemons = two_nodes(tmp_path, node_toml(dsn, smtp_port, "1s"))
            try:
                await one.start(env={"RELAY_NODE": "node-1"})

                async def one_leads() -> bool:
                    return await holder() == "node-1"

                await wait_for(one_leads, 10, "node-1 to take the retention lease")
                # node-1 purged on taking the lease; its next purge is PURGE_EVERY_S away.
                assert PURGE_EVERY_S > SINGLETON_TTL_S + 60
                assert await post(one.url, events("old", 3)) == 202
                await wait_for(lambda: delivered_lines(tmp_path) == 3, PERIOD_S + 8, "the digest")
                assert await rows() == (3, 3)
                await two.start(env={"RELAY_NODE": "node-2"})
                assert one.kill(signal.SIGKILL) == -signal.SIGKILL
                killed = time.monotonic()

                async def purged() -> bool:
                    return await rows() == (0, 0)

                await wait_for(
                    purged,
                    SINGLETON_TTL_S + 15,
                    "node-2 to purge the delivered rows after the holder's lease ran out",
                )
                # node-2 asks for the lease every second: it purged as soon as the row of
                # node-1 (renewed at most SINGLETON_RENEW_S before it died) had run out.
                assert time.monotonic() - killed >= SINGLETON_TTL_S - SINGLETON_RENEW_S - 1
                assert await holder() == "node-2"
            finally:
                stop(daemons)
    finally:
        await db.close()
    assert "purged rows=" in (tmp_path / "n2" / "daemon.stderr").read_text()
    assert "purged rows=" not in (tmp_path / "n1" / "daemon.stderr").read_text()


def two_nodes(tmp_path: Path, toml: str) -> list[DaemonProcess]:
    """Two `relay serve` processes of one config (in n1/ and n2/), each on a port of its own."""
    daemons = []
    for n in (1, 2):
        where = tmp_path / f"n{n}"
        where.mkdir()
        port = free_port()
        (where / "relay.toml").write_text(toml.replace("127.0.0.1:0", f"127.0.0.1:{port}"))
        daemons.append(DaemonProcess(where / "relay.toml", port))
    return daemons


def stop(daemons: list[DaemonProcess]) -> None:
    """SIGTERM whichever node a test left running (a failed assertion must not leak one)."""
    for d in daemons:
        if d.proc is not None and d.proc.poll() is None:
            d.kill(signal.SIGTERM)


async def post(url: str, body: object) -> int:
    async with aiohttp.ClientSession() as http, http.post(f"{url}/v1/events", json=body) as r:
        return r.status
