"""relay benchmarks: `python -m bench.run all|ingest|deliver|tracking|latency|backlog|pull|soap`.

Each starts the real daemon (`relay serve`) as a subprocess on loopback with a fresh
database, drives it from this process, and prints one result line. The load generator
and receiver share the machine's cores with relay, as they would in a small deployment.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import orjson
from aiohttp import web

from . import pg

EVENT = {
    "event_type": "engine_open",
    "email": "customer@example.com",
    "listid": "t99",
    "sendid": "t9920110705",
    "click_tracking_id": "1927393",
    "engine_ip": "1.2.3.4",
    "user_agent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_10_3)",
}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    def __init__(self, workdir: Path, extra_toml: str = "") -> None:
        self.port = _port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = workdir / "relay.toml"
        self.config.write_text(
            f'[server]\nlisten = "127.0.0.1:{self.port}"\n{pg.storage_toml()}'
            f'[log]\ndispatch = "dispatch.log"\n{extra_toml}'
        )
        self.proc: subprocess.Popen | None = None

    async def __aenter__(self) -> Daemon:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "relay", "serve", "-c", str(self.config)],
            cwd=self.config.parent,
            stderr=subprocess.DEVNULL,
        )
        async with aiohttp.ClientSession() as http:
            for _ in range(200):
                try:
                    async with http.get(f"{self.url}/healthz") as r:
                        if r.status == 200:
                            return self
                except aiohttp.ClientError:
                    await asyncio.sleep(0.05)
        raise RuntimeError("relay did not start")

    async def __aexit__(self, *exc: object) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)


async def bench_ingest(batch: int, clients: int, seconds: float) -> dict:
    body = orjson.dumps([EVENT] * batch) if batch > 1 else orjson.dumps(EVENT)
    with tempfile.TemporaryDirectory() as tmp:
        async with Daemon(
            Path(tmp),
            '[destinations.feed]\ntype = "pull"\n'
            '[[routes]]\nevents = ["*"]\ndestinations = ["feed"]\n',
        ) as d:
            accepted = 0
            deadline = time.monotonic() + seconds
            connector = aiohttp.TCPConnector(limit=clients)
            async with aiohttp.ClientSession(connector=connector) as http:

                async def client() -> None:
                    nonlocal accepted
                    while time.monotonic() < deadline:
                        async with http.post(
                            f"{d.url}/v1/events",
                            data=body,
                            headers={"Content-Type": "application/json"},
                        ) as r:
                            if r.status == 202:
                                accepted += batch
                            await r.read()

                started = time.monotonic()
                await asyncio.gather(*(client() for _ in range(clients)))
                elapsed = time.monotonic() - started
    return {
        "bench": "ingest",
        "batch": batch,
        "clients": clients,
        "events_per_s": round(accepted / elapsed),
        "events": accepted,
    }


async def start_receiver(
    hook: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> tuple[web.AppRunner, str]:
    """A webhook receiver on a free loopback port: its runner (to clean up) and its URL."""
    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}/hook"


async def bench_deliver(events: int, batch_size: int, concurrency: int) -> dict:
    received = 0
    done = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        nonlocal received
        data = orjson.loads(await request.read())
        received += len(data) if isinstance(data, list) else 1
        if received >= events:
            done.set()
        return web.Response(text="ok")

    runner, hook_url = await start_receiver(hook)
    with tempfile.TemporaryDirectory() as tmp:
        extra = (
            f'[destinations.crm]\ntype = "http"\nurl = "{hook_url}"\nbatch_size = {batch_size}\n'
            f'concurrency = {concurrency}\n[[routes]]\nevents = ["*"]\ndestinations = ["crm"]\n'
        )
        daemon = Daemon(Path(tmp), extra)
        # Fill the queue with the destination paused, so the drain is timed on its own.
        _relay("db", "migrate", "-c", str(daemon.config))
        _relay("pause", "crm", "-c", str(daemon.config))
        body = orjson.dumps([EVENT] * 1000)
        async with daemon, aiohttp.ClientSession() as http:
            for _ in range(events // 1000):
                async with http.post(
                    f"{daemon.url}/v1/events",
                    data=body,
                    headers={"Content-Type": "application/json"},
                ) as r:
                    assert r.status == 202, await r.text()
            started = time.monotonic()
            _relay("resume", "crm", "-c", str(daemon.config))
            await asyncio.wait_for(done.wait(), 600)
            elapsed = time.monotonic() - started
        send_ms = sorted(
            line["ms"]
            for line in map(orjson.loads, (Path(tmp) / "dispatch.log").read_bytes().splitlines())
            if line.get("outcome") == "delivered"
        )
    # The same receiver fed by a bare aiohttp client loop in its own process: the ceiling.
    received, done = 0, asyncio.Event()
    body = orjson.dumps([EVENT] * batch_size if batch_size > 1 else EVENT)
    started = time.monotonic()
    client = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        BARE_CLIENT,
        hook_url,
        str(events // batch_size),
        str(concurrency),
        body.decode(),
    )
    await asyncio.wait_for(done.wait(), 600)
    bare_elapsed = time.monotonic() - started
    await client.wait()
    await runner.cleanup()
    return {
        "bench": "deliver",
        "batch_size": batch_size,
        "concurrency": concurrency,
        "deliveries_per_s": round(events / elapsed),
        "events": events,
        "bare_client_per_s": round(events / bare_elapsed),
        "ratio": round(bare_elapsed / elapsed, 2),
        # How long relay's sends took (request → response), from its dispatch log.
        "send_ms_p50": send_ms[len(send_ms) // 2] if send_ms else None,
        "send_ms_p99": send_ms[int(len(send_ms) * 0.99)] if send_ms else None,
    }


BARE_CLIENT = """
import asyncio, sys, aiohttp, uvloop
url, n, c, body = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4].encode()
async def main():
    left = n
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=c)) as http:
        async def worker():
            nonlocal left
            while left > 0:
                left -= 1
                async with http.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
                    await r.read()
        await asyncio.gather(*(worker() for _ in range(c)))
uvloop.run(main())
"""


def _wrk(url: str, seconds: float, connections: int = 64) -> float:
    return _wrk_run(url, seconds, connections)[0]


def _wrk_run(url: str, seconds: float, connections: int = 64) -> tuple[float, int]:
    """(requests/s, requests) from one wrk run."""
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{int(seconds)}s", url],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    lines = out.splitlines()
    rps = float(next(line.split()[1] for line in lines if line.startswith("Requests/sec")))
    n = int(next(line.split()[0] for line in lines if " requests in " in line))
    return rps, n


def _cpu_s(pid: int) -> tuple[float, float]:
    """(main thread, whole process) CPU seconds so far, user + system (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")

    def read(path: str) -> float:
        fields = Path(path).read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick  # utime, stime

    try:
        return read(f"/proc/{pid}/task/{pid}/stat"), read(f"/proc/{pid}/stat")
    except OSError:
        return 0.0, 0.0


async def _load(url: str, seconds: float, pid: int) -> tuple[float, float, float]:
    """wrk on url: (requests/s, event-loop-thread CPU µs per request, other threads' µs)."""
    main0, all0 = _cpu_s(pid)
    rps, n = await asyncio.to_thread(_wrk_run, url, seconds)
    main1, all1 = _cpu_s(pid)
    main_us = (main1 - main0) / max(n, 1) * 1e6
    return rps, main_us, (all1 - all0) / max(n, 1) * 1e6 - main_us


BARE_APP = """
import sys, uvloop
from aiohttp import web
GIF = bytes.fromhex("47494638396101000100800000000000ffffff21f90401000000002c00000000010001000002024401003b")
async def pixel(request): return web.Response(body=GIF, content_type="image/gif")
async def click(request): raise web.HTTPFound("http://www.example.com/")
app = web.Application()
app.router.add_get("/o/{token}.gif", pixel)
app.router.add_get("/c/{token}", click)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None, loop=uvloop.new_event_loop())
"""


async def bench_tracking(seconds: float, rounds: int = 1) -> dict:
    """Pixel and click requests/s with wrk (every hit committed), and a bare aiohttp server.

    Both servers run side by side and are loaded in turn (relay pixel, bare pixel, relay
    click, bare click) `rounds` times, so a busy neighbour on a shared box weighs on both
    alike; each figure is the median over rounds. `*_cpu_us` is the CPU time of the
    server's event-loop thread per request (from /proc: steadier than requests/s on a
    shared box); `*_other_us` is the rest of the process (relay: the SQLite thread).
    """
    port = _port()
    bare = subprocess.Popen([sys.executable, "-c", BARE_APP, str(port)])
    try:
        with tempfile.TemporaryDirectory() as tmp:
            async with Daemon(
                Path(tmp),
                '[destinations.feed]\ntype = "pull"\n'
                '[[routes]]\nevents = ["*"]\ndestinations = ["feed"]\n',
            ) as d:
                async with aiohttp.ClientSession() as http:
                    links = [
                        {"kind": "open", "email": "customer@example.com", "sendid": "t9920110705"},
                        {
                            "kind": "click",
                            "email": "customer@example.com",
                            "sendid": "t9920110705",
                            "url": "http://www.example.com/",
                        },
                    ]
                    async with http.post(f"{d.url}/v1/links", json=links) as r:
                        open_url, click_url = (await r.json())["urls"]
                token = open_url.rsplit("/", 1)[1]
                assert d.proc is not None
                runs: dict[str, list[tuple[float, float, float]]] = {}
                for _ in range(rounds):
                    for name, url, pid in (
                        ("pixel", open_url, d.proc.pid),
                        ("bare_pixel", f"http://127.0.0.1:{port}/o/{token}", bare.pid),
                        ("click", click_url, d.proc.pid),
                        ("bare_click", f"http://127.0.0.1:{port}/c/x", bare.pid),
                    ):
                        runs.setdefault(name, []).append(await _load(url, seconds, pid))
    finally:
        bare.terminate()
        bare.wait()
    result: dict = {"bench": "tracking"}
    for name, samples in runs.items():
        result[f"{name}_rps"] = round(statistics.median(s[0] for s in samples))
    for name in ("pixel", "click"):
        ratios = [r[0] / b[0] for r, b in zip(runs[name], runs[f"bare_{name}"], strict=True)]
        result[f"{name}_ratio"] = round(statistics.median(ratios), 2)
    for name, samples in runs.items():
        result[f"{name}_cpu_us"] = round(statistics.median(s[1] for s in samples), 1)
        if not name.startswith("bare"):
            result[f"{name}_other_us"] = round(statistics.median(s[2] for s in samples), 1)
    return result


def _relay(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "relay", *args], check=True, capture_output=True)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.run")
    p.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    p.add_argument("--dsn", help="--backend postgres: a database to make schemas in")
    sub = p.add_subparsers(dest="what", required=True)
    pull = sub.add_parser("pull", help="claim + ack through the pull API")
    pull.add_argument("--events", type=int, default=50_000)
    pull.add_argument("--batch", type=int, default=1000)
    pull.add_argument("--clients", type=int, default=2)
    soap = sub.add_parser("soap", help="PHP SoapClient getBatch vs JSON pull, same events")
    soap.add_argument("--events", type=int, default=10_000)
    soap.add_argument("--rounds", type=int, default=3)
    i = sub.add_parser("ingest")
    i.add_argument("--batch", type=int, default=100)
    i.add_argument("--clients", type=int, default=16)
    i.add_argument("--seconds", type=float, default=10)
    d = sub.add_parser("deliver")
    d.add_argument("--events", type=int, default=20000)
    d.add_argument("--batch-size", type=int, default=1)
    d.add_argument("--concurrency", type=int, default=16)
    t = sub.add_parser("tracking")
    t.add_argument("--seconds", type=float, default=10)
    t.add_argument("--rounds", type=int, default=1, help="interleaved rounds; medians")
    lat = sub.add_parser("latency", help="end-to-end 202 → receiver at a fixed rate")
    lat.add_argument("--rate", type=int, default=1000)
    lat.add_argument("--seconds", type=float, default=10)
    b = sub.add_parser("backlog", help="RSS, start-up, stats, drain with N pending deliveries")
    b.add_argument("--events", type=int, default=1_000_000)
    a = sub.add_parser("all", help="everything, one table, each figure a median")
    a.add_argument("--runs", type=int, default=3)
    a.add_argument("--seconds", type=float, default=5)
    a.add_argument("--backlog", type=int, default=1_000_000, help="0 skips the backlog bench")
    a.add_argument("--deliver-events", type=int, default=20000)
    args = p.parse_args()
    os.environ.setdefault("PYTHONHASHSEED", "0")
    pg.use(args.backend, args.dsn)
    from . import suite

    if args.what == "all":
        suite.main_all(args.runs, args.seconds, args.backlog, args.deliver_events)
        return
    if args.what == "latency":
        result = asyncio.run(suite.bench_latency(args.rate, args.seconds))
    elif args.what == "backlog":
        result = asyncio.run(suite.bench_backlog(args.events))
    elif args.what == "tracking":
        result = asyncio.run(bench_tracking(args.seconds, args.rounds))
    elif args.what == "pull":
        result = asyncio.run(pg.bench_pull(args.events, args.batch, args.clients))
    elif args.what == "soap":
        from .soap import bench_soap

        result = asyncio.run(bench_soap(args.events, args.rounds))
    elif args.what == "ingest":
        result = asyncio.run(bench_ingest(args.batch, args.clients, args.seconds))
    else:
        result = asyncio.run(bench_deliver(args.events, args.batch_size, args.concurrency))
    print(orjson.dumps(result).decode())


if __name__ == "__main__":
    main()
