"""How long one big email digest and one big FTP upload take: `python -m bench.periodic`.

Stores N events for one destination directly in a fresh SQLite store, then times one
flushed round of the real `PeriodicDispatcher` (claim, build, send, ack, dispatch log)
against aiosmtpd / aioftp servers on loopback. Prints one line per case.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import tempfile
import time
from pathlib import Path

import aioftp
import orjson
from aiosmtpd.controller import Controller

from relay.config import RetryPolicy
from relay.config.destinations import EmailDestination, FtpDestination
from relay.dispatch.factory import make_dispatcher
from relay.dispatch.log import DispatchLog
from relay.models import NewEvent
from relay.outcomes import Outcomes
from relay.store.sqlite import SqliteStore

EVENT = {
    "event_type": "engine_open",
    "email": "customer@example.com",
    "listid": "t99",
    "sendid": "t9920110705",
    "click_tracking_id": "1927393",
    "engine_ip": "1.2.3.4",
    "user_agent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_10_3)",
}


class _Sink:
    def __init__(self) -> None:
        self.bytes = 0

    async def handle_DATA(self, server, session, envelope) -> str:
        self.bytes += len(envelope.content)
        return "250 OK"


async def _fill(store: SqliteStore, dest: str, n: int) -> None:
    now = time.time()
    for start in range(0, n, 5000):
        batch = []
        for i in range(start, min(n, start + 5000)):
            event = {**EVENT, "id": f"b{i:08d}", "event_time": int(now)}
            batch.append(
                NewEvent(
                    event["id"],
                    "engine_open",
                    now,
                    orjson.dumps(event),
                    ((dest, now),),
                    check_duplicate=False,
                )
            )
        await store.append(batch)


async def _round(dest, workdir: Path, n: int) -> float:
    store = SqliteStore(workdir / f"{dest.name}.db")
    await store.open()
    await _fill(store, dest.name, n)
    log = DispatchLog(str(workdir / f"{dest.name}.log"))
    outcomes = Outcomes(store, log)
    outcomes.restart(dest.name)
    tally = outcomes.tallies[dest.name]
    dispatcher = make_dispatcher(dest, store, outcomes)
    await dispatcher.start()
    started = time.perf_counter()
    dispatcher.flush()
    while tally["delivered"] < n:
        if tally["retry"]:
            raise SystemExit(f"{dest.name}: a send failed")
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - started
    await dispatcher.stop(5)
    log.close()
    await store.close()
    return elapsed


async def main(digest_n: int, upload_n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        sink = _Sink()
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        controller = Controller(sink, hostname="127.0.0.1", port=port, data_size_limit=0)
        controller.start()
        try:
            email = EmailDestination(
                "digest",
                RetryPolicy(),
                "127.0.0.1",
                "r@example.com",
                ("ops@example.com",),
                port=port,
                max_events_per_message=digest_n,
            )
            s = await _round(email, workdir, digest_n)
            print(
                f"email digest: {digest_n} events in one message ({sink.bytes / 1e6:.1f} MB) "
                f"in {s:.2f} s"
            )
        finally:
            controller.stop()
        root = workdir / "ftp"
        root.mkdir()
        server = aioftp.Server([aioftp.User("u", "p", base_path=root, home_path="/")])
        await server.start("127.0.0.1", 0)
        try:
            ftp = FtpDestination(
                "upload",
                RetryPolicy(),
                "127.0.0.1",
                port=server.server_port,
                username="u",
                password="p",
                max_events_per_file=upload_n,
            )
            s = await _round(ftp, workdir, upload_n)
            size = sum(p.stat().st_size for p in root.iterdir())
            print(
                f"ftp upload: {upload_n} events in one jsonl file ({size / 1e6:.1f} MB) "
                f"in {s:.2f} s"
            )
        finally:
            await server.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--digest", type=int, default=10_000)
    parser.add_argument("--upload", type=int, default=100_000)
    args = parser.parse_args()
    asyncio.run(main(args.digest, args.upload))
