"""The `relay` command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from . import __version__, tail
from .config import (
    Config,
    ConfigError,
    HttpDestination,
    PullDestination,
    find_config,
    load,
    node_name,
)
from .config.reader import parse_duration, parse_listen
from .dispatch.log import DispatchLog
from .domain.replay import ReplayError, ReplayRequest
from .domain.text import one_line
from .store import DestinationStats, StorageUnavailable, make_store

if TYPE_CHECKING:
    from .admin import Admin
    from .dispatch.activity import Activity
    from .dispatch.dispatcher import Dispatcher
    from .store.sqlite import SqliteStore


class Failed(Exception):
    """A command failed; the message is printed as one line on stderr, exit status 1."""


def parse_time(value: str) -> float:
    """Epoch seconds, an ISO 8601 time, or a duration meaning that long ago (`2h`)."""
    try:
        return float(value)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return parsed.timestamp()
    except ValueError:
        pass
    try:
        return time.time() - parse_duration(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a time: {value!r} (epoch seconds, ISO 8601, or e.g. 2h)"
        ) from None


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (exit status 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("-c", "--config", default=argparse.SUPPRESS, help="config file")
    common.add_argument(
        "--db", default=argparse.SUPPRESS, metavar="PATH", help="SQLite database (storage.path)"
    )
    p = _Parser(prog="relay", description="A durable event relay for mail platforms.")
    p.add_argument(
        "-c",
        "--config",
        default=None,
        help="config file (default: $RELAY_CONFIG, "
        "./relay.toml, /etc/relay/relay.toml, else embedded defaults)",
    )
    p.add_argument(
        "--db",
        default=None,
        metavar="PATH",
        help="the SQLite database, overriding storage.path (default: relay.db)",
    )
    p.add_argument("--version", action="version", version=f"relay {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add = lambda name, help: sub.add_parser(name, parents=[common], help=help)  # noqa: E731
    listen_help = "listen on HOST:PORT, overriding server.listen (default: 127.0.0.1:8080)"
    serve = add("serve", "run the daemon")
    serve.add_argument("--listen", metavar="HOST:PORT", help=listen_help)
    check = add(
        "check-config", "report every problem of the config at once, or print what it would run"
    )
    check.add_argument("--listen", metavar="HOST:PORT", help=listen_help)
    sh = add("show", "explain one event: its destinations, their state and every attempt")
    sh.add_argument(
        "event_id",
        help="the event's id, as the 202 answer, the dispatch log or the console show it",
    )
    sh.add_argument(
        "--json", action="store_true", help="print what GET /v1/admin/events/{id} answers"
    )
    s = add("stats", "per destination: pending, leased, dead, delivered, oldest pending")
    s.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    t = add("tail", "read or follow the dispatch log")
    t.add_argument(
        "-f", "--follow", action="store_true", help="keep printing lines as they are written"
    )
    t.add_argument("--json", action="store_true", help="print the log's JSON lines as they are")
    t.add_argument("--destination", help="only this destination's lines")
    t.add_argument("--event-type", help="only this event type's lines (hides audit lines)")
    t.add_argument(
        "--outcome",
        choices=["delivered", "retry", "dead", "leased", "acked"],
        help="only lines with this outcome (hides audit lines)",
    )
    dead = add("dead", "list or replay dead deliveries")
    dsub = dead.add_subparsers(dest="dead_command", required=True, metavar="list|replay")
    dl = dsub.add_parser("list", parents=[common], help="list dead deliveries")
    dl.add_argument("--destination", help="only this destination's dead deliveries")
    dl.add_argument("--json", action="store_true", help="one JSON object a line")
    dl.add_argument("--limit", type=int, default=1000, help="print at most this many, oldest first")
    dr = dsub.add_parser("replay", parents=[common], help="make dead deliveries pending again")
    dr.add_argument(
        "--destination",
        help="only this destination's dead deliveries; '*' for every destination (a replay "
        "says what to replay: a destination, ids, a time range or a group)",
    )
    dr.add_argument(
        "--id", action="append", default=[], dest="ids", metavar="ID", help="event id (repeatable)"
    )
    dr.add_argument(
        "--since",
        type=parse_time,
        metavar="T",
        help="events received at or after T (epoch, ISO 8601 or an age: 2h)",
    )
    dr.add_argument("--until", type=parse_time, metavar="T", help="events received before T")
    dr.add_argument(
        "--dry-run", action="store_true", help="count what would be replayed, change nothing"
    )
    dr.add_argument("--group", metavar="G", help="a failure group's id, as the console shows it")
    dr.add_argument(
        "--rate",
        type=float,
        metavar="R",
        help="at most R events a second (0.001 to 1e6), oldest first",
    )
    pa = add("pause", "stop sending to a destination (its backlog is kept)")
    pa.add_argument("destination", help="a destination name")
    pa.add_argument(
        "--for",
        dest="duration",
        metavar="DURATION",
        help="resume by itself after this long, e.g. 30m",
    )
    add("resume", "start sending to a paused destination again").add_argument(
        "destination", help="a destination name"
    )
    add("flush", "send a digest or upload now instead of at the end of its period").add_argument(
        "destination", help="an email, ftp or sftp destination"
    )
    lk = add("link", "print one signed tracking URL")
    lk.add_argument(
        "--kind",
        required=True,
        choices=["click", "open", "unsub", "signup"],
        help="the link's kind",
    )
    lk.add_argument("--email", help="the recipient (required except for signup)")
    lk.add_argument(
        "--url", help="click: the target; unsub: the landing page; signup: the thank-you page"
    )
    lk.add_argument("--listid", help="the list, carried into the event")
    lk.add_argument("--sendid", help="the send or campaign, carried into the event")
    lk.add_argument("--click-tracking-id", help="which link or placement, carried into the event")
    lk.add_argument("--mail-class", help="the kind of mail, carried into the event")
    add("backup", "a consistent copy of the database, safe while the daemon runs").add_argument(
        "path", help="where to write the copy; it must not exist yet"
    )
    db = add("db", "database maintenance")
    db.add_subparsers(dest="db_command", required=True, metavar="migrate").add_parser(
        "migrate", parents=[common], help="apply schema migrations"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(name)s %(levelname)s %(message)s", stream=sys.stderr
    )
    try:
        config = load_config(args)
        return COMMANDS[args.command](args, config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"relay: {problem}", file=sys.stderr)
        if len(exc.problems) > 1:
            print(f"relay: {len(exc.problems)} problems in the config", file=sys.stderr)
        return 1
    except (Failed, StorageUnavailable) as exc:
        print(f"relay: {exc}", file=sys.stderr)
        return 1


def load_config(args: argparse.Namespace) -> Config:
    """The config file found for `-c`, with `--listen` and `--db` applied over it."""
    listen = getattr(args, "listen", None)
    if listen is not None:
        try:
            parse_listen(listen)
        except ValueError as exc:
            raise Failed(f"--listen: {exc}") from None
    return load(find_config(args.config), listen, args.db)


def _with_store(config: Config, work: Callable[[SqliteStore], Awaitable[int]]) -> int:
    """Run `work` against the database (the daemon may be running: that's fine)."""
    if config.storage.backend == "sqlite" and not config.storage.path.exists():
        raise Failed(
            f"no database at {config.storage.path} (has relay serve run with this config?)"
        )

    async def go() -> int:
        store = make_store(config.storage)
        await store.open()
        try:
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(go())


def cmd_serve(args: argparse.Namespace, config: Config) -> int:
    import uvloop

    from .daemon import StartupError, serve

    try:
        uvloop.run(serve(config, lambda: load_config(args)))
    except StartupError as exc:
        raise Failed(str(exc)) from None
    return 0


def cmd_check_config(args: argparse.Namespace, config: Config) -> int:
    """Problems are reported by `main` (every one, each with its key path, exit 1); a
    config without any prints what would run: the effective destinations and routes."""
    print(f"config: {config.source}")
    db = config.storage.path if config.storage.backend == "sqlite" else "postgres (storage.dsn)"
    print(f"listen: {config.server.host}:{config.server.port}  database: {db}")
    print("destinations:")
    for name, d in config.destinations.items():
        if isinstance(d, HttpDestination):
            where = f"{d.method} {d.url} ({d.format})"
        else:
            where = "pull API" if isinstance(d, PullDestination) else d.describe()
        print(f"  {name:<16} {d.type:<5} {where}")
    if not config.routes:
        print("routes: none (routes = []: every event is unrouted)")
    else:
        print("routes:")
    for r in config.routes:
        types = "*" if len(r.event_types) == 13 else ",".join(sorted(r.event_types))
        match = " ".join(f"{k}={'|'.join(sorted(v))}" for k, v in r.match)
        print(f"  {types} -> {', '.join(r.destinations)}" + (f"  when {match}" if match else ""))
    return 0


def cmd_stats(args: argparse.Namespace, config: Config) -> int:
    async def work(store: SqliteStore) -> int:
        stats = await store.stats()
        for name in config.destinations:
            stats.destinations.setdefault(name, DestinationStats())
        if args.json:
            out = stats.as_dict()
            if config.storage.backend == "postgres":
                out["node"] = node_name(config)
            print(orjson.dumps(out).decode())
            return 0
        if config.storage.backend == "postgres":  # which node `relay serve` here runs as
            print(f"node: {node_name(config)}")
        print(f"events: {stats.events}  unrouted: {stats.unrouted}")
        print(
            f"{'destination':<20}{'pending':>10}{'leased':>10}{'dead':>10}{'delivered':>12}  oldest pending"
        )
        for name, d in sorted(stats.destinations.items()):
            age = "-" if d.oldest_pending_s is None else f"{d.oldest_pending_s:.1f}s"
            print(
                f"{one_line(name):<20}{d.pending:>10}{d.leased:>10}{d.dead:>10}{d.delivered:>12}  {age}"
            )
        return 0

    return _with_store(config, work)


@dataclass
class Offline:
    """What `Admin` acts on in a command: the database and the config, no dispatchers (the
    running daemon picks up pauses, resumes and replays from the database within a second)."""

    store: SqliteStore
    config: Config
    log: DispatchLog | None
    paused: dict[str, float | None]
    dispatchers: dict[str, Dispatcher] = field(default_factory=dict)
    activities: dict[str, Activity] = field(default_factory=dict)

    async def refresh_paused(self) -> None:
        self.paused = await self.store.paused()

    async def recover(self, destinations: Iterable[str]) -> None:
        """A replay from the command line: ask the running daemon to send now (an open
        circuit probes at once), through the flush requests it reads every second."""
        for name in destinations:  # only webhooks have a circuit to probe
            if isinstance(self.config.destinations.get(name), HttpDestination):
                await self.store.request_flush(name)


async def _admin(store: SqliteStore, config: Config, log: DispatchLog | None = None) -> Admin:
    """`Admin` for a command: only the store, the config and, for actions, the dispatch
    log's audit lines."""
    from .admin import Admin  # only the commands that read or act through it load it

    return Admin(Offline(store, config, log, await store.paused()))


def cmd_show(args: argparse.Namespace, config: Config) -> int:
    async def work(store: SqliteStore) -> int:
        view = await (await _admin(store, config)).event_view(args.event_id)
        if view is None:
            raise Failed(f"no event with id {args.event_id!r} (never received, or purged)")
        if args.json:
            print(orjson.dumps(view).decode())
        else:
            print("\n".join(one_line(line) for line in show_lines(view)))
        return 0

    return _with_store(config, work)


def show_lines(view: dict) -> list[str]:
    """`relay show`: the event's fields, then each destination and its attempts, one a line."""
    event = view["event"]
    out = [f"event {event.get('id')}  {event.get('event_type')}  received {view['received_at']}"]
    width = max((len(k) for k in event), default=0)
    for key, value in event.items():
        if key in ("id", "event_type"):
            continue
        text = value if isinstance(value, str) else orjson.dumps(value).decode()
        out.append(f"  {key:<{width}}  {text}")
    if not view["destinations"]:
        out.append("no destinations (no route matched this event)")
    for d in view["destinations"]:
        line = f"{d['name']}: {d['state']}, {d['attempts_made']} attempt(s)"
        if d.get("next_attempt"):
            line += f", next attempt {d['next_attempt']}"
        out.append(line)
        for a in d["attempts"]:
            parts = [f"  #{a['attempt']}", a["ts"], a["outcome"]]
            parts.append("-" if a["status"] is None else str(a["status"]))
            parts.append(f"{a['ms']:g}ms")
            if a.get("error"):
                parts.append(a["error"])
            out.append(" ".join(parts))
        if not d["attempts"] and d.get("last_error"):
            out.append(f"  last error: {d['last_error']}")
    return out


def cmd_tail(args: argparse.Namespace, config: Config) -> int:
    return tail.run(
        config.dispatch_log, args.follow, args.json, args.destination, args.event_type, args.outcome
    )


def cmd_dead(args: argparse.Namespace, config: Config) -> int:
    if args.dead_command == "list":

        async def work(store: SqliteStore) -> int:
            rows = await store.dead_list(args.destination, 0, args.limit)
            for r in rows:
                if args.json:
                    print(orjson.dumps(r.as_dict()).decode())
                else:
                    print(
                        one_line(
                            f"{r.event_id}  {r.destination}  {r.event_type}  attempts={r.attempts}  {r.last_error or ''}"
                        )
                    )
            return 0
    else:
        try:
            req = ReplayRequest(
                args.destination,
                tuple(args.ids),
                args.since,
                args.until,
                args.group,
                args.rate,
                args.dry_run,
            )
        except ReplayError as exc:
            flag = {"destination": "destination", "ids": "id"}.get(exc.field, exc.field)
            raise Failed(f"--{flag}: {exc.message}") from None

        async def work(store: SqliteStore) -> int:
            # The audit line goes to the dispatch log, as from the console (not to stdout).
            log = DispatchLog(config.dispatch_log) if config.dispatch_log != "-" else None
            try:
                result = await (await _admin(store, config, log)).replay(req, "cli")
            finally:
                if log is not None:
                    log.close()
            if args.dry_run:
                print(f"would replay {result['matched']} deliveries")
            else:
                print(f"replayed {result['replayed']} deliveries")
            return 0

    return _with_store(config, work)


def _known(config: Config, name: str) -> None:
    if name not in config.destinations:
        raise Failed(f"unknown destination {name!r} (known: {', '.join(config.destinations)})")


def cmd_pause(args: argparse.Namespace, config: Config) -> int:
    _known(config, args.destination)
    until = None
    if args.duration:
        try:
            until = time.time() + parse_duration(args.duration)
        except ValueError as exc:
            raise Failed(f"--for: {exc}") from None
    _with_store(config, lambda store: _done(store.pause(args.destination, until)))
    print(f"paused {args.destination}" + (f" for {args.duration}" if until else ""))
    return 0


def cmd_resume(args: argparse.Namespace, config: Config) -> int:
    _known(config, args.destination)
    _with_store(config, lambda store: _done(store.resume(args.destination)))
    print(f"resumed {args.destination}")
    return 0


def cmd_flush(args: argparse.Namespace, config: Config) -> int:
    from .dispatch.factory import is_periodic

    _known(config, args.destination)
    if not is_periodic(config.destinations[args.destination]):
        raise Failed(
            f"{args.destination} is not an email digest, ftp or sftp destination: nothing to flush"
        )
    _with_store(config, lambda store: _done(store.request_flush(args.destination)))
    print(f"flush requested for {args.destination} (the running daemon sends within seconds)")
    return 0


def cmd_link(args: argparse.Namespace, config: Config) -> int:
    from .domain.links import LinkError, make_link
    from .runtime import signer

    item = {
        "kind": args.kind,
        "email": args.email,
        "url": args.url,
        "listid": args.listid,
        "sendid": args.sendid,
        "click_tracking_id": args.click_tracking_id,
        "mail_class": args.mail_class,
    }
    try:
        print(make_link(signer(config), item))
    except LinkError as exc:
        raise Failed(f"--{exc.field.replace('_', '-')}: {exc.message}") from None
    return 0


def cmd_backup(args: argparse.Namespace, config: Config) -> int:
    target = Path(args.path)
    if target.exists():
        raise Failed(f"{target} exists; choose a new path")
    _with_store(config, lambda store: _done(store.backup(target)))
    print(f"backed up {config.storage.path} to {target}")
    return 0


def cmd_db(args: argparse.Namespace, config: Config) -> int:
    async def work(store: SqliteStore) -> int:
        print(f"schema version {await store.schema_version()}")
        return 0

    if config.storage.backend == "sqlite" and not config.storage.path.exists():
        config.storage.path.touch()
    return _with_store(config, work)  # opening the store migrates it


async def _done(awaitable: Awaitable[object]) -> int:
    await awaitable
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace, Config], int]] = {
    "serve": cmd_serve,
    "check-config": cmd_check_config,
    "stats": cmd_stats,
    "show": cmd_show,
    "tail": cmd_tail,
    "dead": cmd_dead,
    "pause": cmd_pause,
    "resume": cmd_resume,
    "flush": cmd_flush,
    "link": cmd_link,
    "backup": cmd_backup,
    "db": cmd_db,
}
