"""`relay serve`: start in order (store, dispatch log, web, dispatchers), stop in reverse.

Signal handlers only set flags; the main coroutine does the work. SIGTERM/SIGINT stop
gracefully, SIGHUP reloads the config (a bad new config is logged and the old one kept)
and reopens the dispatch log for logrotate.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import time
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from .config import Config, ConfigError, PullDestination, node_name
from .dispatch.log import DispatchLog
from .dispatch.wakeups import Wakeups
from .domain.routing import Router
from .intake import Intake
from .metrics import Metrics
from .runtime import Runtime
from .store import StorageUnavailable, make_store
from .store.spool import Spool
from .systemd import Heartbeat, Notifier, status_line
from .web.app import create_app
from .web.guard import LIMITS
from .web.limits import ListenSite

log = logging.getLogger("relay")

CONTROL_EVERY_S = 1.0  # how often the CLI's pause/resume/flush in the database is picked up
PURGE_EVERY_S = 600.0


class StartupError(Exception):
    """relay cannot start; the message says why in one line."""


class Daemon:
    """One relay process: `start()`, then `run()` until a signal, then `stop()`."""

    def __init__(self, config: Config, reload: Callable[[], Config] | None = None) -> None:
        self.config = config
        # SIGHUP reads the config again through this (the file, with the command line's
        # overrides); None: the config cannot change.
        self._load = reload or (lambda: config)
        self.runtime: Runtime | None = None
        self.port: int | None = None  # the bound port (useful when listening on port 0)
        self._runner: web.AppRunner | None = None
        self._stop = asyncio.Event()
        self._hup = asyncio.Event()
        self.notify = Notifier.from_env()  # systemd: READY, STATUS, WATCHDOG, RELOADING, STOPPING
        self._heartbeat = Heartbeat(self.notify, self._status)

    async def start(self) -> None:
        config = self.config
        # Built first, so the store (another node's NOTIFY) can wake dispatchers later on.
        metrics, wakeups = Metrics(), Wakeups()
        store = make_store(
            config.storage, node_name(config), on_commit=metrics.committed, on_wake=wakeups.wake
        )
        try:
            await store.open()
        except (StorageUnavailable, OSError) as exc:
            raise StartupError(str(exc)) from None
        pulls = [n for n, d in config.destinations.items() if isinstance(d, PullDestination)]
        released = await store.release_leases(keep=pulls)
        if released:
            log.info("released leases=%d reason=restart", released)
        spool = None
        if config.storage.backend == "postgres":  # a tracking link must never break
            spool = Spool(Path(f"{config.storage.path}.spool"))
            await spool.open()
        router = Router(config.routes, config.destinations)
        intake = Intake(store, router, metrics, wakeups.wake, spool)
        node = store.node  # several nodes share a PostgreSQL queue
        dispatch_log = DispatchLog(config.dispatch_log, node)
        self.runtime = runtime = Runtime(config, store, dispatch_log, metrics, wakeups, intake)
        await runtime.refresh_paused()
        await runtime.restore_pictures()  # before listening: the first answer shows them
        app = create_app(runtime)
        self._runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=5.0,
            keepalive_timeout=config.server.idle_timeout_s,
        )
        try:
            await self._runner.setup()
            site = ListenSite(self._runner, config.server.host, config.server.port, app[LIMITS])
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            await store.close()
            where = f"{config.server.host}:{config.server.port}"
            raise StartupError(f"cannot listen on {where}: {exc.strerror or exc}") from None
        self.port = self._runner.addresses[0][1]
        await runtime.start_dispatchers()  # after listening: a port in use delivers nothing
        # Everything made so far lives as long as the process: keep the collector off it,
        # and collect young objects less often (ingest makes many short-lived dicts).
        gc.freeze()
        gc.set_threshold(20_000, 50, 100)
        log.info(
            "started listen=%s:%d db=%s destinations=%d%s",
            config.server.host,
            self.port,
            config.storage.path if config.storage.backend == "sqlite" else "postgres",
            len(config.destinations),
            f" node={node}" if node else "",
        )
        self.notify.ready("started")  # store, web and dispatchers are all up
        self._heartbeat.start()

    async def _status(self) -> str:
        return "stopping" if self.runtime is None else await status_line(self.runtime)

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Upkeep every second until asked to stop: reloads, pause changes, retention."""
        assert self.runtime is not None
        last_purge = 0.0
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), CONTROL_EVERY_S)
            if self._hup.is_set():
                self._hup.clear()
                await self.reload()
            try:
                await self.runtime.intake.drain_spool()
                await self.runtime.refresh_paused()
                await self.runtime.take_flushes()
                if time.time() - last_purge > PURGE_EVERY_S and await self.runtime.store.lead(
                    "retention"
                ):  # one node of a cluster runs retention
                    last_purge = time.time()
                    cutoff = time.time() - self.runtime.config.storage.retention_s
                    if purged := await self.runtime.store.purge(cutoff):
                        log.info("purged rows=%d", purged)
            except Exception:  # upkeep is best effort: log, carry on
                log.exception("upkeep failed")

    async def stop(self) -> None:
        runtime = self.runtime
        if runtime is None:
            return
        self.runtime = None
        self.notify.stopping()
        if self._runner is not None:
            await self._runner.cleanup()  # stop taking requests; requests in flight finish
        await runtime.stop_dispatchers()
        stats = await runtime.store.stats()
        await runtime.store.close()
        runtime.intake.close()
        runtime.log.close()
        summary = runtime.summary()
        summary["pending"] = sum(d.pending + d.leased for d in stats.destinations.values())
        log.info("stopped %s", " ".join(f"{k}={v}" for k, v in summary.items()))
        await self._heartbeat.stop()  # the watchdog kept ticking through the stop
        self.notify.close()

    async def reload(self) -> None:
        """SIGHUP: tell systemd we are reloading, and ready again after, whatever happened."""
        self.notify.reloading()
        try:
            await self._reload()
        finally:
            self.notify.ready("reloaded")

    async def _reload(self) -> None:
        runtime = self.runtime
        assert runtime is not None
        runtime.log.reopen()
        try:
            config = self._load()
        except ConfigError as exc:
            log.error("reload rejected, keeping the running config: %s", "; ".join(exc.problems))
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

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._hup.set)


async def serve(config: Config, reload: Callable[[], Config]) -> None:
    daemon = Daemon(config, reload)
    await daemon.start()
    daemon.install_signal_handlers()
    try:
        await daemon.run()
    finally:
        await daemon.stop()
