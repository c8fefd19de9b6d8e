from __future__ import annotations

from collections.abc import Iterator

import pytest

from . import pg
from .helpers import Receiver, RunningRelay
from .mailftp import BreakingPathIO, FtpServer


@pytest.fixture
async def receiver():
    r = Receiver()
    await r.start()
    yield r
    await r.stop()


@pytest.fixture
async def ftp(tmp_path):
    """aioftp's server on 127.0.0.1 with user relay / s3cret, files under tmp_path/ftp-root;
    a test that breaks uploads (`BreakingPathIO.breaks`) leaves none broken for the next."""
    root = tmp_path / "ftp-root"
    root.mkdir()
    server = FtpServer(root)
    await server.start_on()
    yield server
    BreakingPathIO.breaks = 0
    await server.close()


@pytest.fixture
async def make_relay(tmp_path):
    """`await make_relay(toml)` → a started RunningRelay; stopped after the test."""
    started: list[RunningRelay] = []

    async def make(toml: str, subdir: str = "") -> RunningRelay:
        where = tmp_path / subdir if subdir else tmp_path
        where.mkdir(exist_ok=True)
        relay = await RunningRelay(where, toml).start()
        started.append(relay)
        return relay

    yield make
    for relay in reversed(started):
        await relay.stop()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Make the clusters' template now, beside the tests that run first, if any will need it."""
    if any("cluster" in getattr(item, "fixturenames", ()) for item in items):
        pg.TEMPLATE.prepare()


@pytest.fixture(scope="module")
def cluster() -> Iterator[pg.Cluster]:
    """A PostgreSQL cluster of the module's own, which its tests may stop and start."""
    c = pg.Cluster()
    try:
        yield c
    finally:
        c.destroy()
