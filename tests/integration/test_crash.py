"""Durability: a 202 means committed. kill -9 the real daemon mid-stream, many times."""

from __future__ import annotations

import asyncio
import itertools
import signal

import aiohttp

from ..helpers import DaemonProcess, base_toml, free_port, wait_for

KILLS = 4


async def _ingest_until(
    stop: asyncio.Event, url: str, acked: set[str], counter: itertools.count
) -> None:
    """Post batches of 20 as fast as the daemon answers; remember ids that got a 202."""
    async with aiohttp.ClientSession() as http:
        while not stop.is_set():
            batch = [
                {"event_type": "bounce", "email": "x@example.com", "id": f"ev-{next(counter)}"}
                for _ in range(20)
            ]
            try:
                async with http.post(f"{url}/v1/events", json=batch) as resp:
                    if resp.status == 202:
                        acked.update(e["id"] for e in batch)
            except (aiohttp.ClientError, TimeoutError):
                await asyncio.sleep(0.01)  # the daemon is down: try again


async def test_kill_9_loses_no_acknowledged_event(tmp_path, receiver):
    port = free_port()
    config = tmp_path / "relay.toml"
    config.write_text(
        base_toml(listen=f"127.0.0.1:{port}")
        + f'[destinations.crm]\ntype = "http"\nurl = "{receiver.url}"\nconcurrency = 16\n'
        + 'retry = { initial = "50ms", max = "200ms" }\n'
        + '[[routes]]\nevents = ["*"]\ndestinations = ["crm"]\n'
    )
    daemon = DaemonProcess(config, port)
    acked: set[str] = set()
    counter = itertools.count()
    try:
        for _ in range(KILLS):
            await daemon.start()
            stop = asyncio.Event()
            client = asyncio.create_task(_ingest_until(stop, daemon.url, acked, counter))
            before = len(acked)
            await wait_for(
                lambda b=before: len(acked) >= b + 400, 20, "the daemon to accept events"
            )
            assert daemon.kill(signal.SIGKILL) == -signal.SIGKILL
            stop.set()
            await client
        await daemon.start()  # the last life drains everything
        received = set()

        def all_delivered() -> bool:
            received.update(receiver.delivered_ids())
            return acked <= received

        await wait_for(all_delivered, 60, "every acknowledged event to be delivered")
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.kill(signal.SIGTERM)
    assert len(acked) >= KILLS * 400
    missing = acked - received
    assert not missing, f"{len(missing)} acknowledged events were lost"
