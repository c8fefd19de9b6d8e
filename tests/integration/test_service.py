"""relay as a service: sd_notify, signals, reload, startup refusals, /metrics, /readyz and
circuit breaking. Signals go to a real `relay serve` subprocess; systemd's notify socket is a
datagram socket this test binds."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest
from lxml import etree
from prometheus_client.parser import text_string_to_metric_families

from relay.domain.links import make_link
from relay.runtime import STOP_GRACE_S
from relay.store import StorageUnavailable
from relay.store.sqlite import SqliteStore

from ..helpers import DaemonProcess, Receiver, RunningRelay, base_toml, free_port, wait_for

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
SECRET = '[tracking]\nsecrets = ["test-secret-test-secret"]\n'  # so start-up logs nothing else
_names = itertools.count()


def hook(name: str, url: str, *extra: str) -> str:
    return "\n".join([f"[destinations.{name}]", 'type = "http"', f'url = "{url}"', *extra]) + "\n"


def route(*destinations: str) -> str:
    names = ", ".join(f'"{d}"' for d in destinations)
    return f'[[routes]]\nevents = ["*"]\ndestinations = [{names}]\n'


def bounce(i: int | str) -> dict:
    return {"id": f"ev{i}", "event_type": "bounce", "email": f"user{i}@example.com"}


def stderr_of(tmp_path: Path) -> str:
    path = tmp_path / "daemon.stderr"
    return path.read_text() if path.exists() else ""


async def post(url: str, events: object) -> int:
    async with aiohttp.ClientSession() as http, http.post(f"{url}/v1/events", json=events) as r:
        return r.status


async def exit_code(proc, timeout: float) -> int:
    await wait_for(lambda: proc.poll() is not None, timeout, "relay to exit")
    return proc.returncode


def port_answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


class NotifySocket:
    """Stands in for systemd: a datagram socket in the abstract namespace, read as it goes."""

    def __init__(self, port: int) -> None:
        self.port = port  # the daemon's: checked the moment READY=1 arrives
        self.name = f"relay-test-{os.getpid()}-{next(_names)}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.name)
        self.sock.setblocking(False)
        self.messages: list[list[str]] = []
        self.port_open_at_ready: bool | None = None
        self._task = asyncio.create_task(self._read())

    @property
    def env(self) -> dict[str, str]:
        return {"NOTIFY_SOCKET": "@" + self.name}

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            lines = (await loop.sock_recv(self.sock, 4096)).decode().split("\n")
            if "READY=1" in lines and self.port_open_at_ready is None:
                self.port_open_at_ready = port_answers(self.port)
            self.messages.append(lines)

    def indexes(self, field: str) -> list[int]:
        return [i for i, m in enumerate(self.messages) if field in m]

    def count(self, field: str) -> int:
        return len(self.indexes(field))

    def fields(self, prefix: str) -> list[str]:
        return [f for m in self.messages for f in m if f.startswith(prefix)]

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self.sock.close()


@pytest.fixture
async def daemons():
    """Start DaemonProcess objects through this; any still running are killed after."""
    started: list[DaemonProcess] = []
    yield started
    for d in started:
        if d.proc is not None and d.proc.poll() is None:
            d.kill(signal.SIGKILL)


def serve(tmp_path: Path, toml: str, daemons: list) -> DaemonProcess:
    port = free_port()
    config = tmp_path / "relay.toml"
    config.write_text(base_toml(listen=f"127.0.0.1:{port}") + SECRET + toml)
    daemon = DaemonProcess(config, port)
    daemons.append(daemon)
    return daemon


# -- sd_notify -----------------------------------------------------------------------------


async def test_notify_ready_status_watchdog_reload_and_stop(tmp_path, receiver, daemons):
    daemon = serve(tmp_path, hook("crm", receiver.url) + route("crm"), daemons)
    systemd = NotifySocket(daemon.port)
    try:
        await daemon.start(env={**systemd.env, "WATCHDOG_USEC": "200000"})  # ping every 0.1 s
        await wait_for(lambda: systemd.count("READY=1") == 1, 5, "READY=1")
        assert systemd.port_open_at_ready is True  # READY only once the port answers
        await wait_for(lambda: systemd.count("WATCHDOG=1") >= 5, 5, "watchdog pings")
        assert systemd.indexes("READY=1")[0] < systemd.indexes("WATCHDOG=1")[0]
        await wait_for(lambda: systemd.fields("STATUS=ingested "), 5, "a STATUS with counts")
        assert "backlog 0" in systemd.fields("STATUS=ingested ")[0]

        daemon.proc.send_signal(signal.SIGHUP)
        await wait_for(lambda: systemd.count("READY=1") == 2, 5, "READY=1 after the reload")
        (reloading,) = systemd.indexes("RELOADING=1")
        assert reloading < systemd.indexes("READY=1")[1]
        assert systemd.messages[reloading][1].startswith("MONOTONIC_USEC=")
        pings = systemd.count("WATCHDOG=1")
        await wait_for(lambda: systemd.count("WATCHDOG=1") >= pings + 3, 5, "pings after reload")

        daemon.proc.send_signal(signal.SIGTERM)
        assert await exit_code(daemon.proc, STOP_GRACE_S + 5) == 0
        assert systemd.count("STOPPING=1") == 1
        stopped = [line for line in stderr_of(tmp_path).splitlines() if " stopped " in line]
        assert len(stopped) == 1 and "ingested=0" in stopped[0] and "pending=0" in stopped[0]
    finally:
        await systemd.close()


# -- SIGHUP --------------------------------------------------------------------------------


async def test_reload_keeps_a_bad_config_out_and_takes_a_good_one(tmp_path, daemons):
    first, second = Receiver(), Receiver()
    await first.start()
    await second.start()
    daemon = serve(tmp_path, hook("crm", first.url) + route("crm"), daemons)
    config = daemon.config_path
    good = config.read_text()
    try:
        await daemon.start()
        assert await post(daemon.url, bounce(1)) == 202
        await wait_for(lambda: "ev1" in first.delivered_ids(), what="ev1 at crm")

        config.write_text(good + route("nope"))
        daemon.proc.send_signal(signal.SIGHUP)
        await wait_for(lambda: "reload rejected" in stderr_of(tmp_path), 5, "the rejection")
        assert "routes[1].destinations: unknown destination 'nope'" in stderr_of(tmp_path)
        assert await post(daemon.url, bounce(2)) == 202  # still serving, old config
        await wait_for(lambda: "ev2" in first.delivered_ids(), what="ev2 at crm")

        log = tmp_path / "dispatch.log"
        await wait_for(lambda: log.exists() and b'"ev2"' in log.read_bytes(), what="ev2 logged")
        log.rename(tmp_path / "dispatch.log.1")  # what logrotate does before its postrotate
        config.write_text(good + hook("extra", second.url) + route("crm", "extra"))
        daemon.proc.send_signal(signal.SIGHUP)
        await wait_for(lambda: "reloaded destinations=2" in stderr_of(tmp_path), 5, "reload")
        assert await post(daemon.url, bounce(3)) == 202
        await wait_for(lambda: "ev3" in second.delivered_ids(), what="ev3 at the new destination")
        await wait_for(lambda: "ev3" in first.delivered_ids(), what="ev3 at crm")
        await wait_for(lambda: log.exists() and log.read_bytes().count(b'"ev3"') == 2, 5, "log")
        assert b'"ev3"' not in (tmp_path / "dispatch.log.1").read_bytes()

        daemon.proc.send_signal(signal.SIGTERM)
        assert await exit_code(daemon.proc, STOP_GRACE_S + 5) == 0
    finally:
        await first.stop()
        await second.stop()


def surfaces_toml(port: int, v: str, unsubscribe_on_get: bool, ip: str, read_only: bool) -> str:
    """Everything a route surface reads per request, each value tagged with `v`."""
    return base_toml(listen=f"127.0.0.1:{port}") + (
        f'[ingest]\ntokens = ["ingest-{v}"]\n'
        f'[tracking]\nsecrets = ["tracking-secret-{v}-tracking-secret"]\n'
        f'unsubscribe_on_get = {str(unsubscribe_on_get).lower()}\nip = "{ip}"\n'
        f'[console]\ntokens = ["console-{v}"]\nread_only = {str(read_only).lower()}\n'
        f'[destinations.inbox]\ntype = "pull"\ntokens = ["pull-{v}"]\n' + route("inbox")
    )


async def test_reload_reaches_every_route_surface_at_its_next_request(tmp_path, daemons):
    """A SIGHUP's tokens, tracking secrets and settings and console settings are what the
    very next request to each surface is judged by: ingest, links, tracking, JSON and SOAP
    pull, the admin API and the console."""
    from .test_soap import decode, envelope

    port = free_port()
    config = tmp_path / "relay.toml"
    config.write_text(
        surfaces_toml(port, "a", unsubscribe_on_get=False, ip="full", read_only=False)
    )
    daemon = DaemonProcess(config, port)
    daemons.append(daemon)
    await daemon.start()
    url = daemon.url

    def bearer(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    async with aiohttp.ClientSession() as http:

        async def status(method: str, path: str, token: str, **kw) -> int:
            async with http.request(method, url + path, headers=bearer(token), **kw) as r:
                await r.read()
                return r.status

        async def link(token: str, kind: str, email: str) -> str:
            body = {"kind": kind, "email": email}
            async with http.post(f"{url}/v1/links", json=body, headers=bearer(token)) as r:
                assert r.status == 200
                return urlsplit((await r.json())["url"]).path

        async def pulled(token: str) -> list[dict]:
            async with http.get(f"{url}/v1/pull/inbox", headers=bearer(token)) as r:
                assert r.status == 200
                batch = await r.json()
            if batch["batch_id"] is not None:
                ack = {"batch_id": batch["batch_id"]}
                assert await status("POST", "/v1/pull/inbox/ack", token, json=ack) == 200
            return batch["events"]

        async def soap_login(password: str) -> str:
            call = envelope(None, "bus_facade_context", "login",
                            {"userName": "inbox", "password": password})  # fmt: skip
            headers = {"Content-Type": "text/xml"}
            async with http.post(f"{url}/soap/pull", data=call, headers=headers) as r:
                answer = etree.fromstring(await r.read()).find(f"{{{SOAP_ENV}}}Body")[0]
            return decode(answer.find("return"))["result"]

        pixel_a = await link("ingest-a", "open", "a@example.com")
        unsub_a = await link("ingest-a", "unsub", "a@example.com")
        async with http.get(url + pixel_a) as r:
            assert r.status == 200
        async with http.get(url + unsub_a) as r:  # a confirm page: records nothing
            assert r.status == 200 and "<form" in await r.text()
        assert await status("POST", "/v1/events", "ingest-a", json=bounce(1)) == 202
        opened = [e for e in await pulled("pull-a") if e["event_type"] == "engine_open"]
        assert opened[0]["engine_ip"] == "127.0.0.1"  # tracking.ip = "full"
        assert await soap_login("pull-a") == "success"
        assert await status("GET", "/v1/admin/destinations", "console-a") == 200
        assert await status("POST", "/v1/admin/destinations/inbox/resume", "console-a") == 200
        assert await status("GET", "/console/", "console-a") == 200

        config.write_text(
            surfaces_toml(port, "b", unsubscribe_on_get=True, ip="none", read_only=True)
        )
        daemon.proc.send_signal(signal.SIGHUP)
        await wait_for(lambda: "reloaded destinations=1" in stderr_of(tmp_path), 5, "the reload")

        # Ingest and links: the new token only.
        assert await status("POST", "/v1/events", "ingest-a", json=bounce(2)) == 401
        assert await status("POST", "/v1/events", "ingest-b", json=bounce(2)) == 202
        assert await status("POST", "/v1/links", "ingest-a", json={"kind": "open"}) == 401
        # Tracking: links signed with the old secret no longer verify; the new ones do, and
        # the new [tracking] settings apply (the unsubscribe on GET, no engine_ip kept).
        async with http.get(url + unsub_a) as r:
            assert r.status == 404
        async with http.get(url + await link("ingest-b", "unsub", "b@example.com")) as r:
            assert r.status == 200 and "You are unsubscribed" in await r.text()
        async with http.get(url + await link("ingest-b", "open", "b@example.com")) as r:
            assert r.status == 200
        # The JSON pull and the SOAP login: the new destination token only.
        async with http.get(f"{url}/v1/pull/inbox", headers=bearer("pull-a")) as r:
            assert r.status == 401
        events = {e["event_type"]: e for e in await pulled("pull-b")}
        assert sorted(events) == ["bounce", "engine_open", "engine_unsub"]
        assert events["engine_unsub"]["email"] == "b@example.com"
        assert "engine_ip" not in events["engine_open"]  # tracking.ip = "none"
        assert await soap_login("pull-a") == "error"
        assert await soap_login("pull-b") == "success"
        # The admin API and the console: the new console token, and read-only.
        assert await status("GET", "/v1/admin/destinations", "console-a") == 401
        assert await status("GET", "/v1/admin/destinations", "console-b") == 200
        assert await status("POST", "/v1/admin/destinations/inbox/resume", "console-b") == 403
        assert await status("GET", "/console/", "console-a") == 401
        assert await status("GET", "/console/", "console-b") == 200

    daemon.proc.send_signal(signal.SIGTERM)
    assert await exit_code(daemon.proc, STOP_GRACE_S + 5) == 0


# -- SIGTERM under load --------------------------------------------------------------------


async def _ingest_until(stop: asyncio.Event, url: str, acked: set[str]) -> None:
    """Post batches of 10 until told to stop; remember the ids that got a 202."""
    counter = itertools.count()
    async with aiohttp.ClientSession() as http:
        while not stop.is_set():
            batch = [bounce(f"-{next(counter)}") for _ in range(10)]
            try:
                async with http.post(f"{url}/v1/events", json=batch) as resp:
                    if resp.status == 202:
                        acked.update(e["id"] for e in batch)
            except (aiohttp.ClientError, TimeoutError):
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.01)


async def test_sigterm_under_load_exits_0_in_the_grace_period_and_loses_nothing(tmp_path, daemons):
    # The first request hangs past the grace period: it is cut off, stays leased, and goes
    # out again after the restart. The others take 50 ms: in flight at SIGTERM, they finish.
    receiver = Receiver(script=["hang"], delay_s=0.05)
    await receiver.start()
    daemon = serve(
        tmp_path,
        hook("crm", receiver.url, 'timeout = "60s"', "concurrency = 4") + route("crm"),
        daemons,
    )
    acked: set[str] = set()
    stop = asyncio.Event()
    try:
        await daemon.start()
        client = asyncio.create_task(_ingest_until(stop, daemon.url, acked))
        await wait_for(lambda: len(receiver.hits) >= 20, 10, "deliveries under way")
        started = time.monotonic()
        daemon.proc.send_signal(signal.SIGTERM)
        assert await exit_code(daemon.proc, STOP_GRACE_S + 10) == 0
        assert time.monotonic() - started < STOP_GRACE_S + 5
        stop.set()
        await client
        stopped = [line for line in stderr_of(tmp_path).splitlines() if " stopped " in line]
        assert len(stopped) == 1 and "pending=0" not in stopped[0]
        for key in ("ingested=", "delivered=", "retried=", "dead=", "pending="):
            assert key in stopped[0], stopped[0]
        hung = receiver.delivered_ids()[0]

        receiver.delay_s = 0
        await daemon.start()
        await wait_for(
            lambda: acked <= set(receiver.delivered_ids()), 20, "every acked event delivered"
        )
        # Cut off, then sent again after the restart (its released lease may come last).
        await wait_for(lambda: receiver.delivered_ids().count(hung) >= 2, 10, "the resend")
        assert receiver.delivered_ids().count(hung) == 2
        assert "released leases=" in stderr_of(tmp_path)
    finally:
        stop.set()
        await receiver.stop()


# -- start-up refusals ---------------------------------------------------------------------


async def _serve_once(config: Path) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "relay",
        "serve",
        "-c",
        str(config),
        cwd=config.parent,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, err = await asyncio.wait_for(proc.communicate(), 20)
    except TimeoutError:
        proc.kill()
        await proc.communicate()
        raise AssertionError("relay serve did not refuse: it is running") from None
    return proc.returncode, err.decode()


async def test_refuses_a_database_newer_than_the_code(tmp_path):
    (tmp_path / "relay.toml").write_text(base_toml() + SECRET)
    with sqlite3.connect(tmp_path / "relay.db") as db:
        db.execute("PRAGMA user_version = 999")
    code, err = await _serve_once(tmp_path / "relay.toml")
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert "schema version 999 is newer than this relay" in err


async def test_refuses_a_port_in_use(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        (tmp_path / "relay.toml").write_text(base_toml(listen=f"127.0.0.1:{port}") + SECRET)
        code, err = await _serve_once(tmp_path / "relay.toml")
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert f"cannot listen on 127.0.0.1:{port}: " in err and "in use" in err


async def test_refuses_an_unreadable_secret(tmp_path):
    secret = tmp_path / "missing" / "tracking-secret"
    toml = base_toml() + f'[tracking]\nsecrets = ["file:{secret}"]\n'
    (tmp_path / "relay.toml").write_text(toml)
    code, err = await _serve_once(tmp_path / "relay.toml")
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert f"tracking.secrets[0]: cannot read secret file {secret}" in err


# -- /metrics and /readyz ------------------------------------------------------------------

NAMES = {
    "relay_events_ingested",
    "relay_deliveries",
    "relay_backlog",
    "relay_oldest_pending_seconds",
    "relay_dead",
    "relay_delivery_latency_seconds",
    "relay_http_requests",
    "relay_commit_batch_size",
    "relay_commit_seconds",
    "relay_circuit_open",
}


async def scrape(relay: RunningRelay) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value}, parsed by prometheus-client's own parser."""
    async with relay.http.get(f"{relay.url}/metrics") as r:
        assert r.status == 200 and r.content_type == "text/plain"
        text = await r.text()
    families = list(text_string_to_metric_families(text))
    assert {f.name for f in families} >= NAMES
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}


def sample(samples: dict, name: str, **labels: str) -> float:
    """The sample's value; a sample that is missing fails the test (it is not a zero)."""
    key = (name, tuple(sorted(labels.items())))
    assert key in samples, f"no sample {name}{labels} in /metrics"
    return samples[key]


async def scraped(relay: RunningRelay, name: str, **labels: str) -> float:
    return sample(await scrape(relay), name, **labels)


async def test_metrics_move_as_events_flow(make_relay, receiver):
    relay = await make_relay(base_toml() + hook("crm", receiver.url) + route("crm"))
    assert (await relay.post_events([bounce(i) for i in range(3)])).status == 202
    pixel = make_link(relay.runtime.current.signer, {"kind": "open", "email": "a@example.com"})
    async with relay.http.get(relay.url + urlsplit(pixel).path) as r:
        assert r.status == 200
    async with relay.http.get(f"{relay.url}/no/such/page") as r:
        assert r.status == 404
    await wait_for(lambda: len(receiver.hits) == 4, what="four deliveries")
    await wait_for(lambda: len(relay.dispatch_lines()) == 4, what="four dispatch lines")

    m = await scrape(relay)
    assert sample(m, "relay_events_ingested_total", event_type="bounce", source="api") == 3
    assert sample(m, "relay_events_ingested_total", event_type="engine_open", source="pixel") == 1
    assert sample(m, "relay_deliveries_total", destination="crm", outcome="delivered") == 4
    assert sample(m, "relay_delivery_latency_seconds_count", destination="crm") == 4
    assert sample(m, "relay_http_requests_total", route="/v1/events", status="202") == 1
    assert sample(m, "relay_http_requests_total", route="/o/{token}.gif", status="200") == 1
    assert sample(m, "relay_http_requests_total", route="unmatched", status="404") == 1
    assert sample(m, "relay_commit_batch_size_count") >= 2
    assert sample(m, "relay_commit_seconds_count") == sample(m, "relay_commit_batch_size_count")
    assert ("relay_backlog", (("destination", "crm"),)) in m
    assert sample(m, "relay_dead", destination="crm") == 0
    assert sample(m, "relay_circuit_open", destination="crm") == 0

    receiver.default = 500  # counters move: two more events, both fail once
    assert (await relay.post_events([bounce(i) for i in range(3, 5)])).status == 202
    await wait_for(lambda: len(receiver.hits) == 6, what="two failed attempts")

    scrapes = 1

    async def backlog_read() -> bool:  # the backlog gauges may be up to STATS_TTL old
        nonlocal scrapes
        scrapes += 1
        return await scraped(relay, "relay_backlog", destination="crm") == 2

    await wait_for(backlog_read, 5, "the backlog gauge to read 2")
    m = await scrape(relay)
    assert sample(m, "relay_events_ingested_total", event_type="bounce", source="api") == 5
    assert sample(m, "relay_deliveries_total", destination="crm", outcome="retry") == 2
    assert sample(m, "relay_backlog", destination="crm") == 2
    assert sample(m, "relay_oldest_pending_seconds", destination="crm") > 0
    assert sample(m, "relay_http_requests_total", route="/metrics", status="200") == scrapes


async def test_relay_dead_counts_the_dead_deliveries(make_relay, receiver):
    receiver.default = 500
    relay = await make_relay(
        base_toml()
        + hook("crm", receiver.url, 'retry = { initial = "10ms", max_attempts = 2 }')
        + route("crm")
    )
    assert await scraped(relay, "relay_dead", destination="crm") == 0
    assert (await relay.post_events([bounce(i) for i in range(3)])).status == 202
    await wait_for(lambda: len(receiver.hits) == 6, 10, "two attempts at each event")

    async def three_dead() -> bool:  # the gauge may be up to STATS_TTL old
        return await scraped(relay, "relay_dead", destination="crm") == 3

    await wait_for(three_dead, 5, "relay_dead to read 3")
    assert await scraped(relay, "relay_backlog", destination="crm") == 0
    assert await scraped(relay, "relay_deliveries_total", destination="crm", outcome="dead") == 3


PULL = '[destinations.default]\ntype = "pull"\n' + route("default")


async def test_metrics_count_stored_events_and_duplicates_apart(make_relay):
    relay = await make_relay(base_toml() + PULL)
    for _ in range(3):
        assert (await relay.post_events(bounce("thrice"))).status == 202
    m = await scrape(relay)
    assert sample(m, "relay_events_ingested_total", event_type="bounce", source="api") == 1
    assert sample(m, "relay_events_duplicate_total", source="api") == 2
    assert (await relay.store.stats()).events == 1


async def test_pull_acks_are_deliveries_in_metrics_and_stats(make_relay):
    relay = await make_relay(base_toml() + PULL)
    assert (await relay.post_events([bounce(i) for i in range(4)])).status == 202
    async with relay.http.get(f"{relay.url}/v1/pull/default?max=10") as r:
        batch = await r.json()
    async with relay.http.post(
        f"{relay.url}/v1/pull/default/ack", json={"batch_id": batch["batch_id"]}
    ) as r:
        assert (r.status, await r.json()) == (200, {"acked": 4})
    m = await scrape(relay)
    assert sample(m, "relay_deliveries_total", destination="default", outcome="delivered") == 4
    assert (await relay.store.stats()).destinations["default"].delivered == 4


async def test_the_stop_line_counts_stored_events_and_pull_acks(tmp_path, daemons):
    daemon = serve(tmp_path, PULL, daemons)
    await daemon.start()
    for _ in range(3):  # one id three times: one stored event, two duplicates
        assert await post(daemon.url, bounce("same")) == 202
    assert await post(daemon.url, [bounce(i) for i in range(3)]) == 202
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{daemon.url}/v1/pull/default?max=100") as r:
            batch = await r.json()
        async with http.post(
            f"{daemon.url}/v1/pull/default/ack", json={"batch_id": batch["batch_id"]}
        ) as r:
            assert (await r.json()) == {"acked": 4}
    daemon.proc.send_signal(signal.SIGTERM)
    assert await exit_code(daemon.proc, STOP_GRACE_S + 5) == 0
    (stopped,) = [line for line in stderr_of(tmp_path).splitlines() if " stopped " in line]
    fields = dict(f.split("=") for f in stopped.split(" stopped ")[1].split())
    assert fields == {
        "ingested": "4",
        "duplicates": "2",
        "delivered": "4",
        "retried": "0",
        "dead": "0",
        "pending": "0",
    }


STATS_TTL = 1.0


async def test_scrapes_read_the_backlog_at_most_once_a_second(make_relay):
    relay = await make_relay(base_toml())
    calls = 0
    real = relay.store.stats

    async def counting():
        nonlocal calls
        calls += 1
        return await real()

    relay.store.stats = counting
    for _ in range(5):
        await scrape(relay)
    assert calls == 1
    started = time.monotonic()

    async def read_again() -> bool:
        await scrape(relay)
        return calls == 2

    await wait_for(read_again, STATS_TTL + 5, "a scrape after STATS_TTL to read the store")
    assert time.monotonic() - started >= STATS_TTL * 0.9  # not before a second had passed
    assert calls == 2


async def test_readyz_checks_the_dispatchers_and_a_real_write(make_relay, receiver, tmp_path):
    relay = await make_relay(base_toml() + hook("crm", receiver.url) + route("crm"), "relay")
    async with relay.http.get(f"{relay.url}/readyz") as r:
        assert (r.status, await r.json()) == (200, {"status": "ready"})
    relay.runtime.dispatchers["crm"]._task.cancel()
    await wait_for(lambda: not relay.runtime.dispatchers["crm"].running, what="a dead dispatcher")
    async with relay.http.get(f"{relay.url}/readyz") as r:
        assert r.status == 503
        assert (await r.json())["problems"] == ["dispatcher crm is not running"]

    store = SqliteStore(tmp_path / "other.db")
    await store.open()
    await store.check_writable()
    assert await store.paused() == {}  # the check leaves nothing behind
    await store.close()
    with pytest.raises(StorageUnavailable):
        await store.check_writable()


# -- circuit breaking ----------------------------------------------------------------------

CIRCUIT = (
    "concurrency = 1",
    'retry = { initial = "20ms", max = "50ms", max_attempts = 15 }',
    'circuit = { failures = 4, cooldown = "300ms", max_cooldown = "600ms" }',
)
# max_attempts is the default (15). Without the breaker, 20 deliveries retried every 20-50 ms
# would all be dead within DOWN_S; with it, exactly 4 failures open it (one send at a time),
# then one probe per cooldown (0.3 s, 0.6 s, 0.6 s, ...) is the only attempt spent.
# DOWN_S is the "nothing else happens" window: long enough for several probes.
DOWN_S = 1.5
OPENING_FAILURES = 4


def probes(caplog) -> int:
    return sum(r.getMessage() == "circuit probe destination=crm" for r in caplog.records)


async def attempts_spent(relay: RunningRelay, ids: list[str]) -> int:
    total = 0
    for event_id in ids:
        detail = await relay.store.event(event_id)
        assert detail is not None
        total += sum(d.attempts for d in detail.deliveries)
    return total


async def _open_for_a_while(relay: RunningRelay, caplog) -> list[str]:
    caplog.set_level(logging.INFO, logger="relay.dispatch")
    ids = [f"ev{i}" for i in range(20)]
    assert (await relay.post_events([bounce(i) for i in range(20)])).status == 202
    dispatcher = relay.runtime.dispatchers["crm"]
    await wait_for(lambda: dispatcher.circuit.is_open, 5, "the circuit to open")
    assert dispatcher.state == "circuit_open"
    assert await scraped(relay, "relay_circuit_open", destination="crm") == 1
    await asyncio.sleep(DOWN_S)  # the window in which nothing but probes may be sent
    stats = (await relay.store.stats()).destinations["crm"]
    assert (stats.pending + stats.leased, stats.dead) == (20, 0)  # held back, not burned
    assert probes(caplog) >= 1
    # Each attempt spent is one of the failures that opened it or one probe: none while open.
    spent = await _spent_while_quiet(relay, caplog, ids)
    assert spent == OPENING_FAILURES + probes(caplog)
    return ids  # no await since the snapshot: the caller may still compare receiver hits


async def _spent_while_quiet(relay: RunningRelay, caplog, ids: list[str]) -> int:
    """Attempts spent, read while no send is in flight or being recorded.

    The dispatcher frees a send's slot (`_inflight`) as soon as the receiver answers and
    records the attempt afterwards (`_tasks` holds it until then), and the next probe may be
    logged at any moment: the count is only comparable with the probes logged when no task
    was running before the read and no probe was logged during it.
    """
    dispatcher = relay.runtime.dispatchers["crm"]
    spent: list[int] = []

    async def quiet_read() -> bool:
        if dispatcher._tasks:
            return False
        logged = probes(caplog)
        total = await attempts_spent(relay, ids)
        if probes(caplog) != logged or dispatcher._tasks:
            return False  # a probe started during the read: read again once it is recorded
        spent.append(total)
        return True

    await wait_for(quiet_read, 10, "a moment with no send in flight or being recorded")
    return spent[-1]


async def _closes_and_delivers(relay: RunningRelay, ids: list[str]) -> None:
    dispatcher = relay.runtime.dispatchers["crm"]
    await wait_for(lambda: not dispatcher.circuit.is_open, 5, "the circuit to close")
    await wait_for(
        lambda: sum(x["outcome"] == "delivered" for x in relay.dispatch_lines()) == len(ids),
        10,
        "the backlog delivered",
    )
    assert dispatcher.state == "ok"


async def test_circuit_opens_on_a_refused_port_and_closes_when_the_receiver_is_back(
    make_relay, caplog
):
    port = free_port()
    relay = await make_relay(
        base_toml() + hook("crm", f"http://127.0.0.1:{port}/hook", *CIRCUIT) + route("crm")
    )
    ids = await _open_for_a_while(relay, caplog)
    spent = OPENING_FAILURES + probes(caplog)

    def retry_lines() -> list[dict]:
        return [x for x in relay.dispatch_lines() if x["outcome"] == "retry"]

    await wait_for(lambda: len(retry_lines()) == spent, 5, f"{spent} retry lines")
    assert all("cannot connect" in x["error"] for x in retry_lines())
    back = Receiver(port=port)
    await back.start()
    try:
        await _closes_and_delivers(relay, ids)
        assert set(back.delivered_ids()) == set(ids)
    finally:
        await back.stop()


async def test_a_failing_receiver_gets_few_requests_while_the_circuit_is_open(
    make_relay, receiver, caplog
):
    receiver.default = 500
    relay = await make_relay(base_toml() + hook("crm", receiver.url, *CIRCUIT) + route("crm"))
    ids = await _open_for_a_while(relay, caplog)
    assert len(receiver.hits) == OPENING_FAILURES + probes(caplog)
    receiver.default = 200
    await _closes_and_delivers(relay, ids)
    assert set(receiver.delivered_ids()) == set(ids)


async def test_serve_listen_and_db_flags_run_the_embedded_defaults_there(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "RELAY_CONFIG"}
    with open(tmp_path / "daemon.stderr", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "relay", "serve", "--listen", f"127.0.0.1:{port}"]
            + ["--db", str(tmp_path / "flags.db")],
            cwd=tmp_path,
            stdout=log,
            stderr=log,
            env=env,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        await wait_for(lambda: port_answers(port), 15, "relay on the --listen port")
        assert await post(url, bounce("flag")) == 202
        async with aiohttp.ClientSession() as http, http.get(f"{url}/v1/pull/default") as r:
            assert [e["id"] for e in (await r.json())["events"]] == ["evflag"]
        assert (tmp_path / "flags.db").exists() and not (tmp_path / "relay.db").exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


async def test_serve_refuses_a_config_whose_routes_reach_no_destination(tmp_path):
    config = tmp_path / "relay.toml"
    config.write_text(base_toml() + hook("crm", "http://127.0.0.1:9/hook"))
    env = {k: v for k, v in os.environ.items() if k != "RELAY_CONFIG"}
    result = subprocess.run(
        [sys.executable, "-m", "relay", "serve", "-c", str(config)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert f"relay: {config}: routes: required: without [[routes]] every event would be" in (
        result.stderr
    )
    assert not (tmp_path / "relay.db").exists()  # refused before anything started
