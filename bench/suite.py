"""`python -m bench.run all`: every benchmark, each figure the median of `--runs` runs, as one
table; plus the end-to-end latency and the large-backlog benchmarks (also runnable alone:
`python -m bench.run latency`, `python -m bench.run backlog --events 1000000`).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import orjson
from aiohttp import web

from . import run as R


async def _receiver(on_events: Callable[[list[dict]], None]) -> tuple[web.AppRunner, str]:
    async def hook(request: web.Request) -> web.Response:
        data = orjson.loads(await request.read())
        on_events(data if isinstance(data, list) else [data])
        return web.Response(text="ok")

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}/hook"


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def bench_latency(rate: int = 1000, seconds: float = 5.0) -> dict:
    """One event a request at a fixed `rate`; latency = receiver arrival − 202 at the client."""
    arrived: dict[str, float] = {}

    def on_events(events: list[dict]) -> None:
        now = time.time()
        for e in events:
            arrived.setdefault(e["id"], now)

    runner, hook_url = await _receiver(on_events)
    acked: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        extra = (
            f'[destinations.crm]\ntype = "http"\nurl = "{hook_url}"\nconcurrency = 32\n'
            'delay = "0s"\n[[routes]]\nevents = ["*"]\ndestinations = ["crm"]\n'
        )
        async with R.Daemon(Path(tmp), extra) as d:
            connector = aiohttp.TCPConnector(limit=256)
            async with aiohttp.ClientSession(connector=connector) as http:

                async def send(n: int) -> None:
                    event = {**R.EVENT, "id": f"lat-{n}"}
                    async with http.post(
                        f"{d.url}/v1/events",
                        data=orjson.dumps(event),
                        headers={"Content-Type": "application/json"},
                    ) as r:
                        await r.read()
                        if r.status == 202:
                            acked[event["id"]] = time.time()

                total = int(rate * seconds)
                tasks = []
                started = time.monotonic()
                for n in range(total):
                    # Open loop: send on schedule whether or not earlier requests answered.
                    delay = started + n / rate - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    tasks.append(asyncio.create_task(send(n)))
                await asyncio.gather(*tasks)
                deadline = time.monotonic() + 30
                while not acked.keys() <= arrived.keys() and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
    await runner.cleanup()
    lat = [max(0.0, arrived[i] - t) * 1000 for i, t in acked.items() if i in arrived]
    return {
        "bench": "latency",
        "rate": rate,
        "events": len(acked),
        "delivered": len(lat),
        "p50_ms": round(_pct(lat, 0.50), 2),
        "p99_ms": round(_pct(lat, 0.99), 2),
        "max_ms": round(max(lat), 2),
    }


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _db_bytes(workdir: Path) -> int:
    """The database with its WAL and shared memory (not the tracking secret)."""
    return sum(
        p.stat().st_size
        for p in workdir.glob("relay.db*")
        if not p.name.endswith("tracking-secret")
    )


async def bench_backlog(events: int = 1_000_000, drain_seconds: float = 10.0) -> dict:
    """A backlog of `events` pending deliveries (destination paused while it fills)."""
    received = 0

    def on_events(batch: list[dict]) -> None:
        nonlocal received
        received += len(batch)

    runner, hook_url = await _receiver(on_events)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        extra = (
            f'[destinations.crm]\ntype = "http"\nurl = "{hook_url}"\nbatch_size = 100\n'
            'concurrency = 16\n[[routes]]\nevents = ["*"]\ndestinations = ["crm"]\n'
        )
        daemon = R.Daemon(workdir, extra)
        R._relay("db", "migrate", "-c", str(daemon.config))
        R._relay("pause", "crm", "-c", str(daemon.config))
        fill_started = time.monotonic()
        async with daemon, aiohttp.ClientSession() as http:
            sem = asyncio.Semaphore(8)

            async def post(start: int) -> None:
                body = orjson.dumps(
                    [{**R.EVENT, "id": f"b{n}"} for n in range(start, start + 1000)]
                )
                async with (
                    sem,
                    http.post(
                        f"{daemon.url}/v1/events",
                        data=body,
                        headers={"Content-Type": "application/json"},
                    ) as r,
                ):
                    assert r.status == 202, await r.text()

            await asyncio.gather(*(post(s) for s in range(0, events, 1000)))
        fill_s = time.monotonic() - fill_started
        db_bytes = _db_bytes(workdir)
        # Start-up with the backlog in place: process start → /healthz answers 200.
        started = time.monotonic()
        daemon = R.Daemon(workdir, extra)
        async with daemon:
            startup_s = time.monotonic() - started
            assert daemon.proc is not None
            await asyncio.sleep(1.0)
            rss_idle = _rss_mb(daemon.proc.pid)
            t0 = time.monotonic()
            R._relay("stats", "-c", str(daemon.config))
            stats_s = time.monotonic() - t0
            R._relay("resume", "crm", "-c", str(daemon.config))
            t0 = time.monotonic()
            rss_peak = rss_idle
            while time.monotonic() - t0 < drain_seconds and received < events:
                await asyncio.sleep(0.25)
                rss_peak = max(rss_peak, _rss_mb(daemon.proc.pid))
            drain_rate = received / (time.monotonic() - t0)
    await runner.cleanup()
    return {
        "bench": "backlog",
        "events": events,
        "fill_s": round(fill_s, 1),
        "db_bytes_per_event": round(db_bytes / events),
        "startup_s": round(startup_s, 2),
        "rss_mb": round(rss_idle, 1),
        "rss_draining_mb": round(rss_peak, 1),
        "stats_s": round(stats_s, 2),
        "drain_per_s": round(drain_rate),
    }


async def _median(runs: int, make: Callable[[], Awaitable[dict]], keys: list[str]) -> dict:
    results = []
    for _ in range(runs):
        results.append(await make())
        print(f"  {orjson.dumps(results[-1]).decode()}", file=sys.stderr, flush=True)
    return {k: statistics.median(r[k] for r in results) for k in keys}


async def run_all(runs: int, seconds: float, backlog: int, deliver_events: int) -> list[tuple]:
    rows: list[tuple[str, str, str]] = []  # (what, figure, ratio / note)

    def fmt(x: float) -> str:
        return f"{x:,.0f}" if x >= 100 else f"{x:,.2f}"

    print("tracking (wrk, 64 connections)…", file=sys.stderr, flush=True)
    t = await _median(
        runs,
        lambda: R.bench_tracking(seconds),
        ["pixel_rps", "click_rps", "bare_pixel_rps", "bare_click_rps"],
    )
    rows += [
        (
            "pixel GET /o/…gif, req/s",
            fmt(t["pixel_rps"]),
            f"{t['pixel_rps'] / t['bare_pixel_rps']:.2f}× bare ({fmt(t['bare_pixel_rps'])})",
        ),
        (
            "click GET /c/…, req/s",
            fmt(t["click_rps"]),
            f"{t['click_rps'] / t['bare_click_rps']:.2f}× bare ({fmt(t['bare_click_rps'])})",
        ),
    ]
    for batch in (1, 100, 1000):
        print(f"ingest batch {batch}…", file=sys.stderr, flush=True)
        i = await _median(runs, lambda b=batch: R.bench_ingest(b, 16, seconds), ["events_per_s"])
        rows.append((f"POST /v1/events, {batch}/request, events/s", fmt(i["events_per_s"]), ""))
    for batch_size in (1, 100):
        print(f"deliver batch_size {batch_size}…", file=sys.stderr, flush=True)
        d = await _median(
            runs,
            lambda b=batch_size: R.bench_deliver(deliver_events, b, 16),
            ["deliveries_per_s", "bare_client_per_s"],
        )
        rows.append(
            (
                f"webhook deliveries/s, batch_size {batch_size}",
                fmt(d["deliveries_per_s"]),
                f"{d['deliveries_per_s'] / d['bare_client_per_s']:.2f}× bare client loop "
                f"({fmt(d['bare_client_per_s'])})",
            )
        )
    print("end-to-end latency…", file=sys.stderr, flush=True)
    lat = await _median(runs, lambda: bench_latency(1000, seconds), ["p50_ms", "p99_ms"])
    rows += [
        ("end-to-end p50 at 1,000 events/s, ms", fmt(lat["p50_ms"]), "202 → receiver"),
        ("end-to-end p99 at 1,000 events/s, ms", fmt(lat["p99_ms"]), "target < 50"),
    ]
    if backlog:
        print(f"backlog {backlog:,} (one run)…", file=sys.stderr, flush=True)
        b = await bench_backlog(backlog)
        print(f"  {orjson.dumps(b).decode()}", file=sys.stderr, flush=True)
        n = f"{backlog:,} pending"
        rows += [
            (
                f"backlog {n}: daemon RSS idle / draining, MB",
                f"{b['rss_mb']:.0f} / {b['rss_draining_mb']:.0f}",
                "target < 200",
            ),
            (f"backlog {n}: start-up, s", fmt(b["startup_s"]), "target < 3"),
            (f"backlog {n}: `relay stats`, s", fmt(b["stats_s"]), "target < 1"),
            (f"backlog {n}: drain, deliveries/s", fmt(b["drain_per_s"]), "batch_size 100"),
            (f"backlog {n}: database bytes/event", fmt(b["db_bytes_per_event"]), ""),
        ]
    return rows


def print_table(rows: list[tuple], runs: int) -> None:
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    print(
        f"relay benchmarks — median of {runs} runs, {os.cpu_count()} CPUs, "
        f"Python {sys.version.split()[0]}"
    )
    print(f"| {'what':<{w0}} | {'figure':>{w1}} | note |")
    print(f"|{'-' * (w0 + 2)}|{'-' * (w1 + 1)}:|------|")
    for what, figure, note in rows:
        print(f"| {what:<{w0}} | {figure:>{w1}} | {note} |")


def main_all(runs: int, seconds: float, backlog: int, deliver_events: int) -> None:
    rows = asyncio.run(run_all(runs, seconds, backlog, deliver_events))
    print_table(rows, runs)
