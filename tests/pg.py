"""A real PostgreSQL for the tests: `RELAY_TEST_PG_DSN`, or a throwaway cluster started here.

`.ci/run` starts one and exports the DSN. Without it, the first test that needs PostgreSQL
starts a cluster with the same script (stopped when the test run ends). Tests never skip for
want of PostgreSQL: a missing server is a failure.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import os
import secrets
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg

SCRIPT = Path(__file__).resolve().parent.parent / ".ci" / "postgres.sh"


@functools.cache
def server_dsn() -> str:
    if dsn := os.environ.get("RELAY_TEST_PG_DSN"):
        return dsn
    where = Path(tempfile.mkdtemp(prefix="relay-pg-"))
    out = subprocess.run(
        ["bash", str(SCRIPT), str(where)], check=True, capture_output=True, text=True
    )
    atexit.register(_stop, where)
    return out.stdout.strip().splitlines()[-1]


def _stop(where: Path) -> None:
    _pg_ctl(where, "stop", "-m", "immediate", check=False)
    shutil.rmtree(where, ignore_errors=True)


def _pg_ctl(where: Path, *args: str, check: bool = True) -> None:
    pg_ctl = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))[-1]
    cmd = [str(pg_ctl), "-D", str(where / "data"), *args]
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    subprocess.run(cmd, capture_output=True, check=check)


class Cluster:
    """A PostgreSQL cluster of a test's own, which it may stop and start again (outages)."""

    def __init__(self) -> None:
        self.where = Path(tempfile.mkdtemp(prefix="relay-pg-own-"))
        out = subprocess.run(
            ["bash", str(SCRIPT), str(self.where)], check=True, capture_output=True, text=True
        )
        self.dsn = out.stdout.strip().splitlines()[-1]

    def stop(self) -> None:
        """A fast shutdown: every connection is cut, the server is gone until `start`."""
        _pg_ctl(self.where, "stop", "-m", "fast", "-w")

    def start(self) -> None:
        opts = (self.where / "start-opts").read_text().strip()
        _pg_ctl(self.where, "start", "-w", "-l", str(self.where / "log"), "-o", opts)

    def destroy(self) -> None:
        _stop(self.where)


def run_sync(work: Callable[[], Awaitable[Any]]) -> Any:
    """Run a coroutine to the end on its own loop in a thread (callable from async tests)."""
    result: list[Any] = []

    def go() -> None:
        result.append(asyncio.run(work()))

    thread = threading.Thread(target=go)
    thread.start()
    thread.join()
    if not result:
        raise AssertionError("postgres helper failed (see the thread's traceback)")
    return result[0]


def execute(sql: str, dsn: str | None = None) -> None:
    async def work() -> None:
        db = await asyncpg.connect(dsn or server_dsn())
        try:
            await db.execute(sql)
        finally:
            await db.close()

    run_sync(work)


def fresh_schema_dsn(base: str | None = None) -> str:
    """A DSN whose tables live in a new, empty schema of their own (one per test)."""
    name = f"t_{secrets.token_hex(6)}"
    base = base or server_dsn()
    execute(f"CREATE SCHEMA {name}", base)
    return f"{base}{'&' if '?' in base else '?'}search_path={name}"
