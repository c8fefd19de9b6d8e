"""Console speed with a big backlog: `python -m bench.console [--events 1000000] [--runs 20]`.

Fills a fresh SQLite database with N pending deliveries to one http destination through
the store's own `append` (batches of 10,000, the destination paused), starts the real
daemon (`relay serve`) on it, lets it deliver for a few seconds to a receiver that fails
one request in three (so the pages have attempts, failures and groups to show), then
times `GET /console/` and `GET /console/destinations/crm`: the median of `--runs`
sequential requests from this process, over loopback — an upper bound on server time.
Measured twice: with the destination paused again, and while it drains.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import orjson
from aiohttp import web

from bench.run import EVENT, Daemon
from relay.config import load
from relay.models import NewEvent
from relay.store import make_store

BATCH = 10_000


async def receiver() -> tuple[web.AppRunner, str]:
    count = 0

    async def hook(request: web.Request) -> web.Response:
        nonlocal count
        await request.read()
        count += 1
        if count % 3 == 0:
            return web.Response(status=500, text=f"upstream error on order {count}")
        return web.Response(text="ok")

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}/hook"


async def fill(config_path: Path, events: int) -> float:
    """N events routed to crm, committed through the store (no HTTP); returns seconds."""
    config = load(config_path)
    store = make_store(config.storage)
    await store.open()
    started = time.monotonic()
    try:
        await store.pause("crm", None)
        now = time.time()
        for start in range(0, events, BATCH):
            batch = [
                NewEvent(
                    f"bk{n}",
                    EVENT["event_type"],
                    now,
                    orjson.dumps({**EVENT, "id": f"bk{n}"}),
                    (("crm", now),),
                    check_duplicate=False,
                )
                for n in range(start, min(events, start + BATCH))
            ]
            await store.append(batch)
    finally:
        await store.close()
    return time.monotonic() - started


def relay_cli(config: Path, *args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "relay", *args, "-c", str(config)],
        check=True,
        cwd=config.parent,
        capture_output=True,
    )


async def timed(http: aiohttp.ClientSession, url: str, runs: int) -> dict:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        async with http.get(url) as resp:
            body = await resp.read()
            assert resp.status == 200, (resp.status, body[:300])
        times.append((time.perf_counter() - t0) * 1000)
    return {
        "median_ms": round(statistics.median(times), 1),
        "p90_ms": round(sorted(times)[int(0.9 * (len(times) - 1))], 1),
        "max_ms": round(max(times), 1),
        "bytes": len(body),
    }


async def main(events: int, runs: int, activity_s: float) -> dict:
    runner, hook = await receiver()
    with tempfile.TemporaryDirectory() as tmp:
        extra = (
            f'[destinations.crm]\ntype = "http"\nurl = "{hook}"\nbatch_size = 1\n'
            'concurrency = 8\nretry = { initial = "1s", max = "10s" }\n'
            '[destinations.feed]\ntype = "pull"\n'
            '[[routes]]\nevents = ["*"]\ndestinations = ["crm"]\n'
        )
        daemon = Daemon(Path(tmp), extra)
        relay_cli(daemon.config, "db", "migrate")
        fill_s = await fill(daemon.config, events)
        result: dict = {"bench": "console", "events": events, "fill_s": round(fill_s, 1)}
        async with daemon, aiohttp.ClientSession() as http:
            pages = {
                "overview": f"{daemon.url}/console/",
                "destination": f"{daemon.url}/console/destinations/crm",
            }
            relay_cli(daemon.config, "resume", "crm")
            await asyncio.sleep(activity_s)  # attempts, failures, retries for the pages
            for name, url in pages.items():
                result[f"{name}_draining"] = await timed(http, url, runs)
            relay_cli(daemon.config, "pause", "crm")
            await asyncio.sleep(6)  # the daemon picks the pause up within 5 s
            for name, url in pages.items():
                await timed(http, url, 2)  # warm
                result[name] = await timed(http, url, runs)
            async with http.get(f"{daemon.url}/v1/admin/destinations") as resp:
                if resp.status == 200:
                    crm = next(d for d in (await resp.json())["destinations"] if d["name"] == "crm")
                    result["pending"] = crm["pending"]
    await runner.cleanup()
    return result


def cli() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--activity", type=float, default=5.0, help="seconds of delivery first")
    args = p.parse_args()
    result = asyncio.run(main(args.events, args.runs, args.activity))
    print(orjson.dumps(result).decode())
    for name in ("overview", "destination"):
        print(
            f"{name:12} paused: median {result[name]['median_ms']} ms "
            f"(p90 {result[name]['p90_ms']}, max {result[name]['max_ms']}) · "
            f"draining: median {result[name + '_draining']['median_ms']} ms"
        )


if __name__ == "__main__":
    cli()
