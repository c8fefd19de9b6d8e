"""`python -m bench.timings`: how fast the things the tests only prove correct are.

The test suite asserts behaviour, never speed (a busy CI box would break a time bound):
these figures were upper bounds in tests once and are measured here instead, with the
target each should stay under on an idle 2-core box.

- rewrite: `relay.domain.rewrite` over 200 KB of each pathological HTML pattern (target < 1 s each)
- tail_line: a delivery's dispatch line reaching an open `/console/tail/stream` (< 2 s)
- stop_with_stream: SIGTERM to `relay serve` with a tail stream open, until it exits (< 2 s)
"""

from __future__ import annotations

import asyncio
import signal
import tempfile
import time
from pathlib import Path

import aiohttp
import orjson
from aiohttp import web

from relay.domain.rewrite import rewrite

from .run import Daemon, start_receiver

PATTERNS = ["<a ", "<!--", "<a href='", "</", "&#z;", "<![ ", "<?", "<!x"]
PREFIXES = tuple(f"https://r.example/{k}/" for k in "couhs")


def bench_rewrite() -> dict[str, float]:
    """Seconds per pattern, 200 KB of it (the worst case a tokenizer could go quadratic on)."""
    out = {}
    for unit in PATTERNS:
        html = unit * (200_000 // len(unit))
        started = time.perf_counter()
        rewrite(html, lambda kind, url: f"https://r.example/{kind[0]}/x", PREFIXES)
        out[unit] = round(time.perf_counter() - started, 4)
    return out


async def bench_tail() -> dict[str, float]:
    async def hook(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    runner, url = await start_receiver(hook)
    toml = (
        f'[destinations.crm]\ntype = "http"\nurl = "{url}"\n'
        '[[routes]]\nevents = ["*"]\ndestinations = ["crm"]\n'
    )
    try:
        with tempfile.TemporaryDirectory(prefix="relay-bench-") as tmp:
            daemon = await Daemon(Path(tmp), toml).__aenter__()
            async with aiohttp.ClientSession() as http:
                stream = await http.get(f"{daemon.url}/console/tail/stream")
                await stream.content.readline()  # retry:
                started = time.perf_counter()
                body = {"event_type": "bounce", "email": "a@example.com", "id": "t1"}
                async with http.post(f"{daemon.url}/v1/events", json=body) as r:
                    assert r.status == 202
                while not (await stream.content.readline()).startswith(b"data:"):
                    pass
                tail_line = time.perf_counter() - started
                assert daemon.proc is not None
                started = time.perf_counter()
                daemon.proc.send_signal(signal.SIGTERM)
                await asyncio.to_thread(daemon.proc.wait, 60)
                stop = time.perf_counter() - started
                stream.release()
    finally:
        await runner.cleanup()
    return {"tail_line_s": round(tail_line, 4), "stop_with_stream_s": round(stop, 4)}


def main() -> None:
    result = {"rewrite_s": bench_rewrite(), **asyncio.run(bench_tail())}
    print(orjson.dumps(result).decode())


if __name__ == "__main__":
    main()
