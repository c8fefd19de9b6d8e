"""Real servers and waiting helpers shared by the tests (no mocks of the network)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp import web

from relay.config import load
from relay.daemon import Daemon


async def wait_for(
    condition: Callable[[], object], timeout: float = 10.0, what: str = "condition"
) -> None:
    """Poll `condition` (sync or async) until truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if isinstance(value, Awaitable):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


def free_port() -> int:
    """A port nothing listens on (bound then released: connections to it are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Hit:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    at: float
    peer: str = ""  # the client's address (source_address)


@dataclass
class Receiver:
    """A webhook receiver on 127.0.0.1 that records requests and fails on demand.

    `script` is a list of behaviours consumed one per request; when empty, `default` is
    used. A behaviour is an int status (`200`, `500`), `("429", seconds)` for 429 with
    Retry-After, `"hang"` (sleep past any timeout), or `"drop"` (close the connection).
    """

    default: object = 200
    script: list[object] = field(default_factory=list)
    hits: list[Hit] = field(default_factory=list)
    url: str = ""
    port: int = 0  # 0: any free port; a fixed one lets a test bring a "down" receiver back
    delay_s: float = 0.0  # answer every request this much later (a slow receiver)
    error_text: str = "nope"  # the body of every non-200 answer
    shutdown_s: float = 60.0  # how long stop() lets requests in flight finish (a "hang" never does)
    _runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=self.shutdown_s
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/hook"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        behaviour = self.script.pop(0) if self.script else self.default
        self.hits.append(
            Hit(
                request.method,
                request.path,
                request.query_string,
                dict(request.headers),
                body,
                time.time(),
                request.remote or "",
            )
        )
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if behaviour == "hang":
            await asyncio.sleep(3600)
        if behaviour == "drop":
            assert request.transport is not None
            request.transport.close()
            return web.Response(status=500)
        if isinstance(behaviour, tuple):
            status, retry_after = behaviour
            return web.Response(status=int(status), headers={"Retry-After": str(retry_after)})
        return web.Response(
            status=int(behaviour), text="ok" if behaviour == 200 else self.error_text
        )

    def delivered_ids(self) -> list[str]:
        """Event ids of every request answered 2xx-or-not, decoded from JSON bodies."""
        import orjson

        ids = []
        for hit in self.hits:
            if hit.body[:1] in (b"{", b"["):
                data = orjson.loads(hit.body)
                ids += [e["id"] for e in (data if isinstance(data, list) else [data])]
        return ids


class RunningRelay:
    """The real relay app on a real socket in this process, from a TOML config text."""

    def __init__(self, tmp_path: Path, toml: str) -> None:
        self.dir = tmp_path
        self.config_path = tmp_path / "relay.toml"
        self.config_path.write_text(toml)
        self.daemon: Daemon | None = None
        self.url = ""
        self.http: aiohttp.ClientSession | None = None

    async def start(self) -> RunningRelay:
        self.daemon = Daemon(load(self.config_path), lambda: load(self.config_path))
        await self.daemon.start()
        self._upkeep = asyncio.create_task(self.daemon.run())  # pause pickup, purge, reload
        self.url = f"http://127.0.0.1:{self.daemon.port}"
        self.http = aiohttp.ClientSession()
        return self

    @property
    def runtime(self):
        assert self.daemon is not None and self.daemon.runtime is not None
        return self.daemon.runtime

    @property
    def store(self):
        return self.runtime.store

    async def post_events(
        self, payload: object, token: str | None = None, **kw
    ) -> aiohttp.ClientResponse:
        assert self.http is not None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        resp = await self.http.post(f"{self.url}/v1/events", json=payload, headers=headers, **kw)
        await resp.read()
        return resp

    def dispatch_lines(self) -> list[dict]:
        import orjson

        path = self.dir / "dispatch.log"
        if not path.exists():
            return []
        return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]

    async def stop(self) -> None:
        if self.http is not None:
            await self.http.close()
        if self.daemon is not None:
            self.daemon.request_stop()
            await self._upkeep
            await self.daemon.stop()


def base_toml(db: str = "relay.db", listen: str = "127.0.0.1:0") -> str:
    return f'[server]\nlisten = "{listen}"\n[storage]\npath = "{db}"\n[log]\ndispatch = "dispatch.log"\n'


class DaemonProcess:
    """`relay serve` as a real subprocess, for kill -9 and signal tests."""

    def __init__(self, config_path: Path, port: int) -> None:
        self.config_path = config_path
        self.port = port
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, timeout: float = 15.0, env: dict[str, str] | None = None) -> None:
        """Start and wait for /healthz; `env` is added to this process's environment."""
        with open(self.config_path.parent / "daemon.stderr", "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "relay", "serve", "-c", str(self.config_path)],
                cwd=self.config_path.parent,
                stdout=log,
                stderr=log,
                env={**os.environ, **env} if env else None,
            )
        async with aiohttp.ClientSession() as http:

            async def healthy() -> bool:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise AssertionError(f"relay exited with {self.proc.returncode}")
                try:
                    async with http.get(f"{self.url}/healthz") as r:
                        return r.status == 200
                except aiohttp.ClientError:
                    return False

            await wait_for(healthy, timeout, "relay to answer /healthz")

    def kill(self, sig: int = signal.SIGKILL) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=30)
