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
import socket
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


class _Template:
    """A stopped cluster, with its `relay_test` database, that each `Cluster` copies.

    initdb is the slow part of a cluster (7-14 s on two busy cores with stress-ng beside
    it), and a module's `cluster` fixture is set up inside its first test's timeout: that
    cost alone took most of the minute. `prepare()` runs it once, in the background, as soon
    as collection shows a test that needs a cluster; a copy and a start take well under a
    second.
    """

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._where: Path | None = None
        self._error: BaseException | None = None

    def prepare(self) -> None:
        if self._thread is None:
            where = Path(tempfile.mkdtemp(prefix="relay-pg-template-"))
            self._thread = threading.Thread(target=self._make, args=(where,), daemon=True)
            self._thread.start()
            atexit.register(self._remove, where)

    def _make(self, where: Path) -> None:
        try:
            subprocess.run(["bash", str(SCRIPT), str(where)], check=True, capture_output=True)
            _pg_ctl(where, "stop", "-m", "fast", "-w")
            self._where = where
        except BaseException as exc:  # raised again in the test that needs the cluster
            self._error = exc

    def _remove(self, where: Path) -> None:
        """At exit, even of a run that never needed it: let a start under way finish first,
        so no server is left running."""
        assert self._thread is not None
        self._thread.join()
        _stop(where)

    def data(self) -> Path:
        """The template's data directory, once made (made here if nobody asked before)."""
        self.prepare()
        assert self._thread is not None
        self._thread.join()
        if self._where is None:
            raise AssertionError(f"the PostgreSQL template cluster failed: {self._error!r}")
        return self._where / "data"


TEMPLATE = _Template()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """A PostgreSQL cluster of a test's own, which it may stop and start again (outages):
    a copy of `TEMPLATE` on a port and socket directory of its own."""

    def __init__(self) -> None:
        self.where = Path(tempfile.mkdtemp(prefix="relay-pg-own-"))
        # cp -a keeps the owner (`postgres`: initdb refuses root) and the 0700 the server wants.
        subprocess.run(["cp", "-a", str(TEMPLATE.data()), str(self.where / "data")], check=True)
        if os.geteuid() == 0:
            shutil.chown(self.where, "postgres", "postgres")  # its socket and log go here
        port = _free_port()
        opts = (
            f"-p {port} -k {self.where} -c listen_addresses=127.0.0.1 -c fsync=off"
            " -c max_connections=300"
        )
        (self.where / "start-opts").write_text(opts)
        self.start()
        self.dsn = f"postgresql://postgres@127.0.0.1:{port}/relay_test"

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
