"""The console's live picture survives a restart: it is rebuilt from the stored attempts,
and a pull destination's from the acks the store tallies per minute.

`relay serve` runs as a real subprocess; the console is read, the daemon stopped and
started again, and the console read again.
"""

from __future__ import annotations

import signal
from datetime import datetime
from pathlib import Path

import aiohttp
import pytest

from relay.dispatch.activity import Activity

from .. import pg
from ..helpers import DaemonProcess, Receiver, base_toml, free_port, wait_for

SECRET = '[tracking]\nsecrets = ["test-secret-test-secret"]\n'
HOOK = (
    '[destinations.crm]\ntype = "http"\nurl = "{url}"\n'
    'retry = {{ initial = "1h", max = "1h", max_attempts = 5 }}\n'
    '[[routes]]\nevents = ["*"]\ndestinations = ["crm"]\n'
)


@pytest.fixture
async def daemon(tmp_path: Path):
    port = free_port()
    receiver = Receiver(script=[200, 200, 200, 500])
    await receiver.start()
    config = tmp_path / "relay.toml"
    config.write_text(
        base_toml(listen=f"127.0.0.1:{port}") + SECRET + HOOK.format(url=receiver.url)
    )
    proc = DaemonProcess(config, port)
    yield proc, receiver
    if proc.proc is not None and proc.proc.poll() is None:
        proc.kill()
    await receiver.stop()


FEED = '[destinations.feed]\ntype = "pull"\n[[routes]]\nevents = ["*"]\ndestinations = ["feed"]\n'


async def crm_row(http: aiohttp.ClientSession, url: str, name: str = "crm") -> dict:
    async with http.get(f"{url}/v1/admin/destinations") as r:
        assert r.status == 200
        (row,) = [d for d in (await r.json())["destinations"] if d["name"] == name]
        return row


async def test_a_restart_keeps_last_success_error_rates_and_sparkline(daemon):
    proc, receiver = daemon
    await proc.start()
    events = [
        {"id": f"lp{i}", "event_type": "bounce", "email": f"u{i}@x.example"} for i in range(4)
    ]
    async with aiohttp.ClientSession() as http:
        for i, event in enumerate(events):  # one at a time: three delivered, one failed
            async with http.post(f"{proc.url}/v1/events", json=event) as r:
                assert r.status == 202
            await wait_for(lambda n=i + 1: len(receiver.hits) == n, 10, "the next send")

        async def recorded() -> bool:
            row = await crm_row(http, proc.url)
            return sum(row["series"]["delivered"]) == 3 and sum(row["series"]["failed"]) == 1

        await wait_for(recorded, 10, "four outcomes recorded")
        before = await crm_row(http, proc.url)
        async with http.get(f"{proc.url}/v1/admin/events/lp2") as r:
            (dest,) = (await r.json())["destinations"]
        assert before["last_success"] == dest["attempts"][-1]["ts"]

        proc.proc.send_signal(signal.SIGTERM)
        await wait_for(lambda: proc.proc.poll() is not None, 20, "relay to stop")
        await proc.start()
        after = await crm_row(http, proc.url)

    assert after["last_success"] == before["last_success"] is not None
    assert after["last_error"] == before["last_error"] is not None
    assert after["last_error"]["status"] == 500
    assert after["failure_rate_1h"] == before["failure_rate_1h"] == 0.25
    assert after["failure_rate_5m"] == before["failure_rate_5m"] == 0.25
    assert sum(after["series"]["delivered"]) == 3
    assert sum(after["series"]["failed"]) == 1
    assert after["pending"] == 1


async def test_the_forecast_warms_up_from_start_not_from_the_first_view(make_relay, receiver):
    relay = await make_relay(base_toml() + HOOK.format(url=receiver.url))
    activity: Activity = relay.runtime.outcomes.activities["crm"]
    # The backlog was noted at start, before anyone opened the console.
    assert len(activity.backlog) == 1
    started, pending = activity.backlog[0]
    assert pending == 0 and abs(started - relay.runtime.started_at) < 5
    # A first view 45 s after start has a trend to show, not "measuring".
    assert activity.trend(600, now=started + 45) == pytest.approx(800)


def storage_toml(backend: str, port: int) -> str:
    if backend == "sqlite":
        return base_toml(listen=f"127.0.0.1:{port}")
    return (
        f'[server]\nlisten = "127.0.0.1:{port}"\n'
        f'[storage]\nbackend = "postgres"\ndsn = "{pg.fresh_schema_dsn()}"\n'
        '[log]\ndispatch = "dispatch.log"\n'
    )


async def pull_and_ack(http: aiohttp.ClientSession, url: str, most: int) -> int:
    async with http.get(f"{url}/v1/pull/feed", params={"max": str(most)}) as r:
        assert r.status == 200
        batch = await r.json()
    async with http.post(f"{url}/v1/pull/feed/ack", json={"batch_id": batch["batch_id"]}) as r:
        assert r.status == 200
        return (await r.json())["acked"]


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_a_pull_destinations_acks_survive_a_kill(tmp_path: Path, backend: str):
    """Pull acks write no attempt rows: the picture comes back from the store's ack tally,
    after kill -9 too (an ack answered 200 is committed with its tally)."""
    port = free_port()
    config = tmp_path / "relay.toml"
    config.write_text(storage_toml(backend, port) + FEED)
    proc = DaemonProcess(config, port)
    await proc.start()
    try:
        async with aiohttp.ClientSession() as http:
            for i in range(5):
                event = {"id": f"pa{i}", "event_type": "bounce", "email": f"u{i}@x.example"}
                async with http.post(f"{proc.url}/v1/events", json=event) as r:
                    assert r.status == 202
            assert await pull_and_ack(http, proc.url, 3) == 3
            assert await pull_and_ack(http, proc.url, 10) == 2
            before = await crm_row(http, proc.url, "feed")
            assert sum(before["series"]["delivered"]) == 5 and before["last_success"] is not None

            proc.kill()
            await proc.start()
            after = await crm_row(http, proc.url, "feed")
    finally:
        if proc.proc is not None and proc.proc.poll() is None:
            proc.kill()

    assert after["last_success"] is not None, "the restart blanked the last ack"
    # The live figure is taken as the ack is answered, the stored one as it commits.
    stamp = datetime.fromisoformat
    assert abs(stamp(after["last_success"]) - stamp(before["last_success"])).total_seconds() < 1
    assert sum(after["series"]["delivered"]) == 5
    assert after["failure_rate_1h"] == after["failure_rate_5m"] == 0.0
    assert (after["pending"], after["delivered"]) == (0, 5)
    # No client has pulled since the restart, and the store keeps no lease times.
    assert after["detail"]["last_pull"] is None
