"""Chaos campaign: mixed load, a flaky receiver, SIGKILL at random moments, many times.

`python -m bench.chaos --rounds 50` runs the long form; tests/integration/test_chaos.py runs
a short one in CI. Each round starts the real daemon (`relay serve`), drives pixel hits and
clicks (signed links from /v1/links, each with a unique `sendid` / `click_tracking_id`) and
/v1/events batches (unique ids) at it, and kills it with SIGKILL at a random moment. The
webhook receiver fails a third of requests at random. A last life drains the queue; then
every event that got a 2xx (and every tracking hit that got its answer) must have been
delivered at least once. Duplicates are counted and printed.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson
from aiohttp import web


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def event_key(event: dict) -> str:
    """What identifies an event across relay: our id for API events, the unique message
    field we put in the link for tracking events (their ids are made by relay)."""
    if event.get("event_type") == "engine_open":
        return f"o:{event.get('sendid')}"
    if event.get("event_type") == "engine_click":
        return f"c:{event.get('click_tracking_id')}"
    return f"e:{event.get('id')}"


@dataclass
class FlakyReceiver:
    """A webhook receiver that answers 500 to `fail_ratio` of requests, at random."""

    rng: random.Random
    fail_ratio: float = 1 / 3
    delivered: collections.Counter = field(default_factory=collections.Counter)
    requests: int = 0
    failed: int = 0
    url: str = ""
    _runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/hook"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests += 1
        if self.rng.random() < self.fail_ratio:
            self.failed += 1
            return web.Response(status=500, text="chaos")
        data = orjson.loads(body)
        for event in data if isinstance(data, list) else [data]:
            self.delivered[event_key(event)] += 1
        return web.Response(text="ok")


@dataclass
class Campaign:
    workdir: Path
    rounds: int = 5
    seed: int = 0
    min_life_s: float = 0.3
    max_life_s: float = 1.5
    drain_timeout_s: float = 60.0
    log: bool = True
    acked: set[str] = field(default_factory=set)
    kills: int = 0
    counts: collections.Counter = field(default_factory=collections.Counter)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.receiver = FlakyReceiver(random.Random(self.seed + 1))
        self.port = _port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = self.workdir / "relay.toml"
        self._ids = itertools.count()
        self.proc: subprocess.Popen | None = None

    def _write_config(self) -> None:
        self.config.write_text(
            f'[server]\nlisten = "127.0.0.1:{self.port}"\n[storage]\npath = "relay.db"\n'
            '[log]\ndispatch = "dispatch.log"\n'
            f'[destinations.crm]\ntype = "http"\nurl = "{self.receiver.url}"\n'
            'batch_size = 10\nconcurrency = 8\ntimeout = "2s"\n'
            'retry = { initial = "50ms", max = "250ms", max_attempts = 1000 }\n'
            '[[routes]]\nevents = ["*"]\ndestinations = ["crm"]\n'
        )

    async def _start(self) -> None:
        with open(self.workdir / "daemon.stderr", "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "relay", "serve", "-c", str(self.config)],
                cwd=self.workdir,
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + 20
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"relay exited with {self.proc.returncode}")
                try:
                    async with http.get(f"{self.url}/healthz") as r:
                        if r.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.02)
        raise RuntimeError("relay did not answer /healthz within 20 s")

    def _kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(30)

    # -- load --------------------------------------------------------------------------

    async def _ingest(self, stop: asyncio.Event, http: aiohttp.ClientSession) -> None:
        while not stop.is_set():
            batch = [
                {
                    "event_type": self.rng.choice(("bounce", "delivery", "scomp")),
                    "email": "x@example.com",
                    "sendid": "chaos",
                    "id": f"ev-{next(self._ids)}",
                }
                for _ in range(self.rng.randint(1, 20))
            ]
            try:
                async with http.post(f"{self.url}/v1/events", json=batch) as r:
                    await r.read()
                    if r.status == 202:
                        self.acked.update(f"e:{e['id']}" for e in batch)
                        self.counts["api_events"] += len(batch)
                    else:
                        self.counts[f"api_status_{r.status}"] += 1
            except (aiohttp.ClientError, TimeoutError, OSError):
                self.counts["api_errors"] += 1
                await asyncio.sleep(0.01)

    async def _track(self, stop: asyncio.Event, http: aiohttp.ClientSession, kind: str) -> None:
        while not stop.is_set():
            keys = [f"{kind}{next(self._ids)}" for _ in range(25)]
            if kind == "o":
                items = [{"kind": "open", "email": "t@example.com", "sendid": k} for k in keys]
            else:
                items = [
                    {
                        "kind": "click",
                        "email": "t@example.com",
                        "click_tracking_id": k,
                        "url": f"https://example.com/{k}",
                    }
                    for k in keys
                ]
            try:
                async with http.post(f"{self.url}/v1/links", json=items) as r:
                    urls = (await r.json())["urls"]
            except (aiohttp.ClientError, TimeoutError, OSError, KeyError, ValueError):
                self.counts["link_errors"] += 1
                await asyncio.sleep(0.01)
                continue
            for key, url in zip(keys, urls, strict=True):
                if stop.is_set():
                    return
                try:
                    async with http.get(url, allow_redirects=False) as r:
                        await r.read()
                        ok = r.status == (200 if kind == "o" else 302)
                except (aiohttp.ClientError, TimeoutError, OSError):
                    self.counts["hit_errors"] += 1
                    break
                if ok:
                    self.acked.add(f"{kind}:{key}")
                    self.counts["pixel_hits" if kind == "o" else "clicks"] += 1
                else:
                    self.counts[f"hit_status_{r.status}"] += 1

    async def _life(self, kill: bool) -> None:
        await self._start()
        stop = asyncio.Event()
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            tasks = [
                asyncio.create_task(self._ingest(stop, http)),
                asyncio.create_task(self._ingest(stop, http)),
                asyncio.create_task(self._track(stop, http, "o")),
                asyncio.create_task(self._track(stop, http, "c")),
            ]
            await asyncio.sleep(self.rng.uniform(self.min_life_s, self.max_life_s))
            if kill:
                self._kill(signal.SIGKILL)
                self.kills += 1
            stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks), 30)

    def _say(self, text: str) -> None:
        if self.log:
            print(text, flush=True)

    async def run(self) -> dict:
        await self.receiver.start()
        self._write_config()
        started = time.monotonic()
        try:
            for n in range(self.rounds):
                await self._life(kill=True)
                self._say(
                    f"round {n + 1}/{self.rounds}: acked {len(self.acked)}, "
                    f"delivered {len(self.receiver.delivered)}"
                )
            await self._start()  # the last life drains everything
            deadline = time.monotonic() + self.drain_timeout_s
            while not self.acked <= self.receiver.delivered.keys():
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
            self._kill(signal.SIGTERM)
        finally:
            if self.proc is not None and self.proc.poll() is None:
                self._kill(signal.SIGKILL)
            await self.receiver.stop()
        delivered = self.receiver.delivered
        missing = self.acked - delivered.keys()
        duplicates = sum(1 for k in self.acked if delivered[k] > 1)
        result = {
            "rounds": self.rounds,
            "kills": self.kills,
            "acked": len(self.acked),
            **dict(sorted(self.counts.items())),
            "delivered_unique": len(delivered),
            "missing": len(missing),
            "duplicates": duplicates,
            "extra_deliveries": sum(n - 1 for n in delivered.values() if n > 1),
            "unacked_but_delivered": len(delivered.keys() - self.acked),
            "receiver_requests": self.receiver.requests,
            "receiver_failed": self.receiver.failed,
            "seconds": round(time.monotonic() - started, 1),
            "missing_sample": sorted(missing)[:10],
        }
        return result


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.chaos")
    p.add_argument("--rounds", type=int, default=50)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--max-life", type=float, default=3.0, help="longest life before a kill (s)")
    args = p.parse_args()
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "big")
    print(f"seed {seed}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        campaign = Campaign(
            Path(tmp),
            rounds=args.rounds,
            seed=seed,
            max_life_s=args.max_life,
            drain_timeout_s=300,
        )
        result = asyncio.run(campaign.run())
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    sys.exit(1 if result["missing"] else 0)


if __name__ == "__main__":
    main()
