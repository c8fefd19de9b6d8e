"""`relay tail -f` follows the dispatch log across a logrotate, both ways logrotate does it:
rename + SIGHUP (what systemd/relay.logrotate does: relay reopens the file) and
`copytruncate` (copy, then truncate in place: the same file starts again from 0).

Debian's `logrotate` is used when installed (a state file and a config of our own, `-f`);
otherwise these steps are done exactly as it does them. A real `relay serve` writes the log;
a real `relay tail -f --json` reads it."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import orjson

from ..helpers import DaemonProcess, base_toml, free_port, wait_for

LOGROTATE = shutil.which("logrotate")


def rotate(tmp_path: Path, log: Path, how: str, pid: int) -> None:
    """One rotation of `log`: `rename` (then SIGHUP to `pid`) or `copytruncate`."""
    if LOGROTATE is not None:
        conf = tmp_path / f"rotate-{how}.conf"
        action = (
            "copytruncate"
            if how == "copytruncate"
            else f"postrotate\n        kill -HUP {pid}\n    endscript"
        )
        conf.write_text(f"{log} {{\n    rotate 5\n    missingok\n    {action}\n}}\n")
        subprocess.run(
            [LOGROTATE, "-f", "-s", str(tmp_path / "logrotate.state"), str(conf)], check=True
        )
        return
    rotated = sorted(tmp_path.glob(log.name + ".*"))
    target = log.with_name(f"{log.name}.{len(rotated) + 1}")
    if how == "rename":
        log.rename(target)  # relay keeps writing to the renamed file until told
        subprocess.run(["kill", "-HUP", str(pid)], check=True)
    else:
        shutil.copyfile(log, target)  # copytruncate: copy, then truncate the same inode
        with open(log, "r+b") as f:
            f.truncate(0)


async def post(url: str, event_id: str) -> None:
    event = {"id": event_id, "event_type": "bounce", "email": "a@example.com"}
    async with aiohttp.ClientSession() as http, http.post(f"{url}/v1/events", json=event) as r:
        assert r.status == 202


async def next_id(tail: asyncio.subprocess.Process) -> str:
    assert tail.stdout is not None
    line = await asyncio.wait_for(tail.stdout.readline(), 15)
    assert line, "relay tail -f ended"
    return orjson.loads(line)["event_id"]


async def test_tail_follows_across_rename_and_copytruncate(tmp_path, receiver):
    port = free_port()
    config = tmp_path / "relay.toml"
    config.write_text(
        base_toml(listen=f"127.0.0.1:{port}")
        + f'[destinations.crm]\ntype = "http"\nurl = "{receiver.url}"\n'
        + '[[routes]]\nevents = ["*"]\ndestinations = ["crm"]\n'
    )
    daemon = DaemonProcess(config, port)
    await daemon.start()
    tail = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "relay", "tail", "-f", "--json", "-c", str(config),
        cwd=tmp_path, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        log = tmp_path / "dispatch.log"
        await post(daemon.url, "before")
        assert await next_id(tail) == "before"

        assert daemon.proc is not None
        rotate(tmp_path, log, "rename", daemon.proc.pid)
        await wait_for(log.exists, 10, "relay to reopen the log after SIGHUP")
        await post(daemon.url, "after-rename")
        assert await next_id(tail) == "after-rename"
        assert b"after-rename" in log.read_bytes()  # relay reopened: a new file

        await post(daemon.url, "filler")  # the file has some length to be cut back from
        assert await next_id(tail) == "filler"
        rotate(tmp_path, log, "copytruncate", daemon.proc.pid)
        await post(daemon.url, "after-truncate")
        assert await next_id(tail) == "after-truncate"
        assert orjson.loads(log.read_bytes().splitlines()[0])["event_id"] == "after-truncate"
    finally:
        # SIGTERM, not SIGINT: a suite started from a non-interactive shell in the background
        # inherits SIGINT ignored, and so would `relay tail -f`, which then never stops
        tail.terminate()
        await tail.wait()
        daemon.kill(signal.SIGTERM)
    rotated = b"".join(p.read_bytes() for p in sorted(tmp_path.glob("dispatch.log.*")))
    ids = [orjson.loads(x)["event_id"] for x in rotated.splitlines()]
    assert ids == ["before", "after-rename", "filler"]  # nothing lost in either rotation
