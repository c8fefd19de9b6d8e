"""The PostgreSQL side of the benchmarks (`python -m bench.run --backend postgres --dsn …`),
and the pull benchmark (claim + ack of batches of 1,000, either backend).

Each daemon started under `--backend postgres` gets a fresh schema of its own in the given
database (`search_path` in its DSN), so runs never see each other's rows.
"""

from __future__ import annotations

import asyncio
import secrets
import tempfile
import time
from pathlib import Path

import aiohttp
import orjson

from . import run as R

BACKEND = {"name": "sqlite", "dsn": ""}


def use(backend: str, dsn: str | None) -> None:
    if backend == "postgres" and not dsn:
        raise SystemExit("--backend postgres needs --dsn postgresql://…")
    BACKEND.update(name=backend, dsn=dsn or "")


def storage_toml() -> str:
    """The `[storage]` table for the next daemon: SQLite in its work dir, or a new schema."""
    if BACKEND["name"] != "postgres":
        return '[storage]\npath = "relay.db"\n'
    import asyncpg

    name = f"bench_{secrets.token_hex(4)}"

    async def create() -> None:
        db = await asyncpg.connect(BACKEND["dsn"])
        try:
            await db.execute(f"CREATE SCHEMA {name}")
        finally:
            await db.close()

    _run(create())
    dsn = BACKEND["dsn"]
    return (
        f'[storage]\nbackend = "postgres"\npool_size = 8\n'
        f'dsn = "{dsn}{"&" if "?" in dsn else "?"}search_path={name}"\n'
    )


def _run(coro) -> None:
    """Run a coroutine to its end from sync or async code (in a thread of its own)."""
    import threading

    error: list[BaseException] = []

    def go() -> None:
        try:
            asyncio.run(coro)
        except BaseException as exc:  # noqa: BLE001 - handed back to the caller
            error.append(exc)

    t = threading.Thread(target=go)
    t.start()
    t.join()
    if error:
        raise error[0]


async def bench_pull(events: int = 50_000, batch: int = 1000, clients: int = 2) -> dict:
    """Claim + ack through the pull API: `clients` loops of GET ?max=batch then POST ack."""
    auth = {"Authorization": "Bearer bench"}
    with tempfile.TemporaryDirectory() as tmp:
        extra = (
            '[destinations.feed]\ntype = "pull"\ntokens = ["bench"]\n'
            '[[routes]]\nevents = ["*"]\ndestinations = ["feed"]\n'
        )
        async with R.Daemon(Path(tmp), extra) as d, aiohttp.ClientSession() as http:
            body = orjson.dumps([R.EVENT] * 1000)
            for _ in range(events // 1000):
                async with http.post(
                    f"{d.url}/v1/events", data=body, headers={"Content-Type": "application/json"}
                ) as r:
                    assert r.status == 202, await r.text()
            taken = 0

            async def client() -> None:
                nonlocal taken
                while True:
                    async with http.get(f"{d.url}/v1/pull/feed?max={batch}", headers=auth) as r:
                        got = orjson.loads(await r.read())
                    if not got["events"]:
                        return
                    async with http.post(
                        f"{d.url}/v1/pull/feed/ack",
                        json={"batch_id": got["batch_id"]},
                        headers=auth,
                    ) as r:
                        assert r.status == 200, await r.text()
                    taken += len(got["events"])

            started = time.monotonic()
            await asyncio.gather(*(client() for _ in range(clients)))
            elapsed = time.monotonic() - started
    return {
        "bench": "pull",
        "backend": BACKEND["name"],
        "batch": batch,
        "clients": clients,
        "events": taken,
        "events_per_s": round(taken / elapsed),
    }
