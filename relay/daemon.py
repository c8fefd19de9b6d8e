"""`relay serve`: start in order (store, dispatch log, web, dispatchers), stop in reverse.

Signal handlers only set flags; the main coroutine does the work. SIGTERM/SIGINT stop
gracefully, SIGHUP reloads the config (a bad new config is logged and the old one kept)
and reopens the dispatch log for logrotate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from pathlib import Path

from aiohttp import web

from .config import Config, ConfigError, PullDestination, load
from .dispatch_log import DispatchLog
from .runtime import Runtime
from .store import SqliteStore, StorageUnavailable
from .web import create_app

log = logging.getLogger("relay")

CONTROL_EVERY_S = 1.0  # how often the CLI's pause/resume in the database is picked up
PURGE_EVERY_S = 600.0


class StartupError(Exception):
    """relay cannot start; the message says why in one line."""


async def serve(config: Config, config_path: Path | None) -> None:
    store = SqliteStore(config.storage.path)
    try:
        await store.open()
    except (StorageUnavailable, OSError) as exc:
        raise StartupError(str(exc)) from None
    pulls = [n for n, d in config.destinations.items() if isinstance(d, PullDestination)]
    released = await store.release_leases(keep=pulls)
    if released:
        log.info("released leases=%d reason=restart", released)
    runtime = Runtime(config, store, DispatchLog(config.dispatch_log))
    runner = web.AppRunner(create_app(runtime), access_log=None, handle_signals=False)
    try:
        await runner.setup()
        site = web.TCPSite(runner, config.server.host, config.server.port, shutdown_timeout=5.0)
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        await store.close()
        raise StartupError(
            f"cannot listen on {config.server.host}:{config.server.port}: {exc.strerror}"
        ) from None
    await runtime.refresh_paused()
    await runtime.start_dispatchers()
    log.info(
        "started listen=%s:%d db=%s destinations=%d",
        config.server.host,
        config.server.port,
        config.storage.path,
        len(config.destinations),
    )
    try:
        await _run_until_stopped(runtime, config_path)
    finally:
        await runner.cleanup()  # stop taking requests; requests in flight finish
        await runtime.stop_dispatchers()
        pending = (await store.stats()).destinations
        await store.close()
        runtime.log.close()
        summary = runtime.summary()
        summary["pending"] = sum(d.pending + d.leased for d in pending.values())
        log.info("stopped %s", " ".join(f"{k}={v}" for k, v in summary.items()))


async def _run_until_stopped(runtime: Runtime, config_path: Path | None) -> None:
    loop = asyncio.get_running_loop()
    stop, hup = asyncio.Event(), asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, hup.set)
    last_purge = 0.0
    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), CONTROL_EVERY_S)
            if hup.is_set():
                hup.clear()
                await _reload(runtime, config_path)
            try:
                await runtime.refresh_paused()
                if time.time() - last_purge > PURGE_EVERY_S:
                    last_purge = time.time()
                    purged = await runtime.store.purge(
                        time.time() - runtime.config.storage.retention_s
                    )
                    if purged:
                        log.info("purged rows=%d", purged)
            except Exception:  # upkeep is best effort: log, carry on
                log.exception("upkeep failed")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)


async def _reload(runtime: Runtime, config_path: Path | None) -> None:
    runtime.log.reopen()
    try:
        config = load(config_path)
    except ConfigError as exc:
        log.error("reload rejected, keeping the running config: %s", exc)
        return
    old = runtime.config
    if (config.server, config.storage) != (old.server, old.storage):
        log.warning("reload: [server] and [storage] changes need a restart; applying the rest")
        config = Config(
            config.source,
            old.server,
            old.storage,
            config.ingest,
            config.tracking,
            config.console,
            old.dispatch_log,
            config.destinations,
            config.routes,
        )
    await runtime.apply(config)
    log.info("reloaded destinations=%d routes=%d", len(config.destinations), len(config.routes))
