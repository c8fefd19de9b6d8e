"""Promises the documentation makes that need the whole daemon to keep: retention run by the
daemon itself, a pull destination's `delay`, `source_address`, a stable Message-ID across
retries, a digest delivered when one recipient of two is refused, reload (SIGHUP) that
removes or changes a destination, and a backup taken while events are being written.
Real servers on 127.0.0.1 (aiohttp receivers, aiosmtpd), the real app on a real socket."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sqlite3
import sys
import time

import aiohttp

from ..helpers import DaemonProcess, Receiver, RunningRelay, free_port, wait_for
from ..mailftp import Mailbox, attached_events, smtp_server


def toml(storage: str = "", listen: str = "127.0.0.1:0") -> str:
    return (
        f'[server]\nlisten = "{listen}"\n[storage]\npath = "relay.db"\n{storage}'
        '[log]\ndispatch = "dispatch.log"\n'
    )


def hook(name: str, url: str, *extra: str) -> str:
    return "\n".join([f"[destinations.{name}]", 'type = "http"', f'url = "{url}"', *extra]) + "\n"


def route(*destinations: str, events: str = '"*"') -> str:
    names = ", ".join(f'"{d}"' for d in destinations)
    return f"[[routes]]\nevents = [{events}]\ndestinations = [{names}]\n"


def event(event_id: str, event_type: str = "bounce", **extra: object) -> dict:
    return {"id": event_id, "event_type": event_type, "email": "a@example.com", **extra}


async def run_cli(*args: str) -> tuple[int, str, str]:
    environ = {k: v for k, v in os.environ.items() if k != "RELAY_CONFIG"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "relay", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=environ,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


# -- retention -----------------------------------------------------------------------------


async def test_the_daemon_purges_past_retention_by_itself(tmp_path, receiver, caplog):
    """Delivered and dead deliveries past `storage.retention` go, with their events; a
    pending one stays. No command is run: the daemon's own upkeep does it at start."""
    down = Receiver(default=500)
    await down.start()
    config = (
        hook("crm", receiver.url)
        + hook("down", down.url, "retry = { max_attempts = 1 }")
        + '[destinations.inbox]\ntype = "pull"\n'
        + route("crm", events='"bounce"')
        + route("down", events='"soft_bounce"')
        + route("inbox", events='"scomp"')
    )
    ids = {"delivered": "ev-d", "dead": "ev-x", "pending": "ev-p"}
    try:
        first = await RunningRelay(tmp_path, toml() + config).start()
        try:
            resp = await first.post_events(
                [event("ev-d"), event("ev-x", "soft_bounce"), event("ev-p", "scomp")]
            )
            assert resp.status == 202

            async def settled() -> bool:
                s = (await first.store.stats()).destinations
                return (s["crm"].delivered, s["down"].dead, s["inbox"].pending) == (1, 1, 1)

            await wait_for(settled, 10, "one delivered, one dead, one pending")
        finally:
            await first.stop()
        # The only wait here: the rows must be older than the 1 s retention of the restart.
        await asyncio.sleep(1.1)

        caplog.set_level(logging.INFO, logger="relay")
        second = await RunningRelay(tmp_path, toml('retention = "1s"\n') + config).start()
        try:

            async def purged() -> bool:
                return await second.store.event(ids["delivered"]) is None

            await wait_for(purged, 10, "the daemon's upkeep to purge")
            assert await second.store.event(ids["dead"]) is None
            kept = await second.store.event(ids["pending"])
            assert kept is not None and [d.destination for d in kept.deliveries] == ["inbox"]
            stats = await second.store.stats()
            assert stats.events == 1
            assert any(r.getMessage().startswith("purged rows=") for r in caplog.records)
        finally:
            await second.stop()
    finally:
        await down.stop()


# -- a pull destination's delay -----------------------------------------------------------


async def pull_ids(relay: RunningRelay) -> list[str]:
    assert relay.http is not None
    async with relay.http.get(f"{relay.url}/v1/pull/inbox", params={"max": "10"}) as r:
        assert r.status == 200
        return [e["id"] for e in (await r.json())["events"]]


async def test_a_pull_destination_holds_events_for_its_delay(make_relay):
    relay = await make_relay(
        toml() + '[destinations.inbox]\ntype = "pull"\ndelay = "1s"\n' + route("inbox")
    )
    before = time.time()
    assert (await relay.post_events(event("late"))).status == 202
    # An event that happened 10 s ago is already past its delay: pulled at once.
    assert (await relay.post_events(event("old", event_time=int(before) - 10))).status == 202
    assert await pull_ids(relay) == ["old"]  # "late" is not due yet
    seen: list[str] = []

    async def late_pulled() -> bool:
        seen.extend(await pull_ids(relay))
        return "late" in seen

    await wait_for(late_pulled, 10, "the delayed event")
    assert seen == ["late"]
    assert time.time() - before >= 1.0


# -- source_address -----------------------------------------------------------------------


async def test_http_requests_leave_from_the_source_address(make_relay, receiver):
    relay = await make_relay(
        toml()
        + hook("crm", receiver.url, 'source_address = "127.0.0.2"')
        + hook("plain", receiver.url.replace("/hook", "/plain"))
        + route("crm", "plain")
    )
    assert (await relay.post_events(event("ev1"))).status == 202
    await wait_for(lambda: len(receiver.hits) == 2, 10, "both requests")
    peers = {hit.path: hit.peer for hit in receiver.hits}
    assert peers == {"/hook": "127.0.0.2", "/plain": "127.0.0.1"}


# -- email: Message-ID across retries, one recipient refused -------------------------------


def email_toml(port: int, extra: str = "") -> str:
    return (
        toml()
        + f'[destinations.mail]\ntype = "email"\nhost = "127.0.0.1"\nport = {port}\n'
        + 'from = "relay@example.com"\nto = ["ops@example.com", "crm@example.com"]\n'
        + 'timeout = "5s"\ndigest = "1h"\n'
        + 'retry = { initial = "50ms", max = "100ms", max_attempts = 5 }\n'
        + extra
        + route("mail")
    )


async def test_the_message_id_is_the_same_on_every_retry(make_relay):
    box = Mailbox(script=[451, 451])  # two temporary failures, then taken
    with smtp_server(box) as port:
        relay = await make_relay(email_toml(port))
        assert (await relay.post_events([event("m1"), event("m2")])).status == 202
        relay.runtime.dispatchers["mail"].flush()
        await wait_for(lambda: box.messages, 10, "the digest, third time lucky")
    assert box.attempts == 3
    first = box.message_ids[0]
    assert first.startswith("<") and first.endswith(">")
    # The receiving side can drop a duplicate by its Message-ID: the same on each try.
    assert box.message_ids == [first] * 3
    assert box.messages[0]["Message-ID"] == first


async def test_a_digest_counts_as_delivered_when_one_recipient_is_refused(make_relay):
    box = Mailbox(refuse=frozenset({"crm@example.com"}))
    with smtp_server(box) as port:
        relay = await make_relay(email_toml(port))
        assert (await relay.post_events([event("r1"), event("r2")])).status == 202
        relay.runtime.dispatchers["mail"].flush()

        async def delivered() -> bool:
            s = (await relay.store.stats()).destinations["mail"]
            return (s.delivered, s.pending, s.leased, s.dead) == (2, 0, 0, 0)

        await wait_for(delivered, 10, "both events delivered")
        await wait_for(lambda: len(relay.dispatch_lines()) == 2, 5, "two dispatch lines")
    assert box.attempts == 1  # not retried
    assert box.recipients == [["ops@example.com"]]
    assert [e["id"] for e in attached_events(box.messages[0])] == ["r1", "r2"]
    assert [line["outcome"] for line in relay.dispatch_lines()] == ["delivered", "delivered"]


# -- reload that removes or changes a destination -----------------------------------------


async def test_reload_removes_and_changes_destinations(tmp_path):
    old, new, extra = Receiver(), Receiver(), Receiver(default=500)
    for r in (old, new, extra):
        await r.start()
    port = free_port()
    config = tmp_path / "relay.toml"
    base = toml(listen=f"127.0.0.1:{port}")
    slow_retry = 'retry = { initial = "100ms", max = "200ms", max_attempts = 1000 }'
    with_extra = hook("extra", extra.url, slow_retry)
    config.write_text(base + hook("crm", old.url) + with_extra + route("crm", "extra"))
    daemon = DaemonProcess(config, port)
    stderr = tmp_path / "daemon.stderr"
    try:
        await daemon.start()
        assert daemon.proc is not None
        async with aiohttp.ClientSession() as http:

            async def post(event_id: str) -> None:
                async with http.post(f"{daemon.url}/v1/events", json=event(event_id)) as r:
                    assert r.status == 202

            await post("ev1")
            await wait_for(lambda: old.delivered_ids() == ["ev1"], 10, "ev1 at crm")
            await wait_for(lambda: len(extra.hits) >= 2, 10, "ev1 failing at extra")

            # crm now points elsewhere; extra is gone.
            config.write_text(base + hook("crm", new.url) + route("crm"))
            daemon.proc.send_signal(signal.SIGHUP)
            await wait_for(
                lambda: "reloaded destinations=1" in stderr.read_text(), 10, "the reload"
            )
            tried = len(extra.hits)
            await post("ev2")
            await wait_for(lambda: new.delivered_ids() == ["ev2"], 10, "ev2 at crm's new url")
            assert old.delivered_ids() == ["ev1"]  # the changed destination left the old url
            # A removed destination stops: its retries (every 100-200 ms) stop with it.
            await asyncio.sleep(0.5)
            assert len(extra.hits) == tried

            # Back again: its backlog (ev1) goes out; ev2 was never routed to it.
            extra.default = 200
            config.write_text(base + hook("crm", new.url) + with_extra + route("crm", "extra"))
            daemon.proc.send_signal(signal.SIGHUP)
            await wait_for(
                lambda: "reloaded destinations=2" in stderr.read_text(), 10, "the second reload"
            )
            await wait_for(lambda: "ev1" in extra.delivered_ids()[tried:], 10, "extra's backlog")
            await post("ev3")
            await wait_for(lambda: "ev3" in extra.delivered_ids(), 10, "ev3 at extra")
            assert "ev2" not in extra.delivered_ids()
            assert new.delivered_ids() == ["ev2", "ev3"]
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.kill(signal.SIGTERM)
        for r in (old, new, extra):
            await r.stop()


# -- a backup while events are being written ----------------------------------------------


async def test_a_backup_taken_during_ingest_is_a_consistent_prefix(make_relay, tmp_path):
    relay = await make_relay(toml() + '[destinations.inbox]\ntype = "pull"\n' + route("inbox"))
    acked: list[str] = []
    stop = asyncio.Event()

    async def ingest() -> None:
        n = 0
        while not stop.is_set():
            batch = [event(f"w{n + i:06d}") for i in range(50)]
            n += 50
            assert (await relay.post_events(batch)).status == 202
            acked.extend(e["id"] for e in batch)

    writer = asyncio.create_task(ingest())
    try:
        await wait_for(lambda: len(acked) >= 500, 20, "writes under way")
        target = tmp_path / "backup.db"
        code, out, err = await run_cli("backup", str(target), "-c", str(relay.config_path))
        assert code == 0, err
        assert not writer.done()  # the writes went on throughout
    finally:
        stop.set()
        await writer
    with sqlite3.connect(target) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        ids = [i for (i,) in db.execute("SELECT id FROM events ORDER BY seq")]
        orphans = db.execute(
            "SELECT count(*) FROM events e WHERE NOT EXISTS "
            "(SELECT 1 FROM deliveries d WHERE d.event_seq = e.seq)"
        ).fetchone()[0]
    # Whole commits, in order, from the first: exactly the first k acknowledged events.
    assert len(ids) >= 500 and len(ids) % 50 == 0
    assert ids == acked[: len(ids)]
    assert orphans == 0  # each event with its delivery: no half of a commit
