"""The console's live picture survives a restart: it is rebuilt from the stored attempts.

`relay serve` runs as a real subprocess; the console is read, the daemon stopped and
started again, and the console read again.
"""

from __future__ import annotations

import signal
from pathlib import Path

import aiohttp
import pytest

from relay.dispatch.activity import Activity

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


async def crm_row(http: aiohttp.ClientSession, url: str) -> dict:
    async with http.get(f"{url}/v1/admin/destinations") as r:
        assert r.status == 200
        (row,) = [d for d in (await r.json())["destinations"] if d["name"] == "crm"]
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
