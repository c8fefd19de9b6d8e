"""The SOAP pull against the JSON pull: the same 10,000 events, the same run, the same daemon.

Every event is routed to two pull destinations, `soap` and `json`, so both queues hold the
same events. PHP's own SoapClient (tests/php/pull.php, the migration guide's script) logs in,
getBatch with markAsReadInd = Y until a batch comes back empty, decodes each base64 CSV and
logs out; its time is the whole `php` process, start-up and WSDL fetch included. The JSON
client takes GET /v1/pull/json?max=10000 and acks until empty. Each round ingests anew.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
import orjson

from . import pg
from . import run as R

PHP_PULL = Path(__file__).resolve().parent.parent / "tests" / "php" / "pull.php"
TOKEN = "bench"
EXTRA = (
    f'[destinations.soap]\ntype = "pull"\ntokens = ["{TOKEN}"]\n'
    f'[destinations.json]\ntype = "pull"\ntokens = ["{TOKEN}"]\n'
    '[[routes]]\nevents = ["*"]\ndestinations = ["soap", "json"]\n'
)


async def _ingest(http: aiohttp.ClientSession, url: str, events: int) -> None:
    body = orjson.dumps([R.EVENT] * 1000)
    for _ in range(events // 1000):
        async with http.post(
            f"{url}/v1/events", data=body, headers={"Content-Type": "application/json"}
        ) as r:
            assert r.status == 202, await r.text()


async def _php(url: str) -> tuple[float, int]:
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        "php", str(PHP_PULL), f"{url}/soap/pull?wsdl", "soap", TOKEN,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, err.decode()
    return elapsed, out.count(b"\n")


async def _json(http: aiohttp.ClientSession, url: str) -> tuple[float, int]:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    taken, started = 0, time.monotonic()
    while True:
        async with http.get(f"{url}/v1/pull/json?max=10000", headers=auth) as r:
            got = orjson.loads(await r.read())
        if not got["events"]:
            return time.monotonic() - started, taken
        async with http.post(
            f"{url}/v1/pull/json/ack", json={"batch_id": got["batch_id"]}, headers=auth
        ) as r:
            assert r.status == 200, await r.text()
        taken += len(got["events"])


async def bench_soap(events: int = 10_000, rounds: int = 3) -> dict:
    soap_s, json_s = [], []
    with tempfile.TemporaryDirectory() as tmp:
        async with R.Daemon(Path(tmp), EXTRA) as d, aiohttp.ClientSession() as http:
            for _ in range(rounds):
                await _ingest(http, d.url, events)
                elapsed, n = await _php(d.url)
                assert n == events, f"PHP pulled {n} of {events}"
                soap_s.append(elapsed)
                elapsed, n = await _json(http, d.url)
                assert n == events, f"JSON pulled {n} of {events}"
                json_s.append(elapsed)
    return {
        "bench": "soap",
        "backend": pg.BACKEND["name"],
        "events": events,
        "rounds": rounds,
        "php_soap_s": round(statistics.median(soap_s), 3),
        "json_pull_s": round(statistics.median(json_s), 3),
        "php_soap_all_s": [round(s, 3) for s in soap_s],
        "json_pull_all_s": [round(s, 3) for s in json_s],
    }
