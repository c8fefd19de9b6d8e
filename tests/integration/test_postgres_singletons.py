"""Cluster-wide singletons (issue 8 §7): with two nodes on one PostgreSQL, exactly one builds
each digest of a period and runs retention; another takes over when the holder goes."""

from __future__ import annotations

import asyncio
import time

import orjson

from relay.store.postgres import PostgresStore

from .. import pg
from ..helpers import wait_for
from ..mailftp import BreakingPathIO, FtpServer, Mailbox, attached_events, smtp_server

PERIOD_S = 2
SPLIT = 5  # max_events_per_message: a period's digest is several messages, sent in a row


class SlowMailbox(Mailbox):
    """Takes 0.3 s per message: a round lasts long enough for another node to butt in."""

    async def handle_DATA(self, server, session, envelope) -> str:
        await asyncio.sleep(0.3)
        return await super().handle_DATA(server, session, envelope)


def node_toml(dsn: str, smtp_port: int) -> str:
    return (
        '[server]\nlisten = "127.0.0.1:0"\n'
        f'[storage]\nbackend = "postgres"\ndsn = "{dsn}"\npool_size = 4\n'
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
        await asyncio.sleep(1)
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
        await asyncio.sleep(PERIOD_S + 0.5)  # a second file would have come by now
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
