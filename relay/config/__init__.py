"""relay's configuration: TOML parsed once into frozen dataclasses.

`load(path)` reads a file; `load(None)` gives the embedded defaults (loopback, `relay.db`,
one `pull` destination named `default` that every event is routed to). A file that leaves
out both `[destinations]` and `[[routes]]` keeps that embedded pair; one whose routes reach
no destination is refused (every event would be unrouted) unless it says `routes = []`.
Every problem in the file is reported at once, in one `ConfigError`, each naming the file
and the dotted key.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import socket
import string
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from ..domain.events import EVENT_TYPES, event_type_for
from .destinations import (
    EmailDestination,
    FtpDestination,
    Leased,
    SftpDestination,
    parse_email,
    parse_ftp,
    parse_sftp,
    round_period_s,
)
from .reader import ConfigError, Table, is_loopback, parse_duration, parse_listen
from .schema import DESTINATION_TYPES

__all__ = ["Config", "ConfigError", "find_config", "load", "node_name", "round_period_s"]

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
SEARCH_PATH = ("relay.toml", "/etc/relay/relay.toml")
MAX_PULL_BATCH = 10_000


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    initial_s: float = 5.0
    max_s: float = 3600.0
    multiplier: float = 2.0
    max_attempts: int = 15
    max_age_s: float = 3 * 86400.0


@dataclass(frozen=True, slots=True)
class CircuitPolicy:
    """`circuit = { failures = 10, cooldown = "30s", max_cooldown = "10m" }`; failures = 0: off."""

    failures: int = 10  # consecutive failed sends that open the circuit
    cooldown_s: float = 30.0  # wait before the first probe; doubled after each failed probe
    max_cooldown_s: float = 600.0


@dataclass(frozen=True, slots=True)
class HttpDestination(Leased):
    name: str
    url: str
    method: str = "POST"
    format: str = "json"
    headers: tuple[tuple[str, str], ...] = ()
    signing_key: bytes | None = None  # decoded from `signing_secret`
    timeout_s: float = 10.0
    delay_s: float = 0.0
    batch_size: int = 1
    concurrency: int = 8
    source_address: str | None = None
    retry: RetryPolicy = RetryPolicy()
    circuit: CircuitPolicy = CircuitPolicy()
    # Statuses that are permanent: dead at once with the reason, never retried.
    reject: tuple[int, ...] = (410,)
    type: str = "http"


@dataclass(frozen=True, slots=True)
class PullDestination:
    name: str
    tokens: tuple[str, ...] = ()
    lease_s: float = 300.0
    max_batch: int = MAX_PULL_BATCH
    delay_s: float = 0.0
    retry: RetryPolicy = RetryPolicy()
    session_idle_s: float = 1200.0  # a SOAP pull session ends after this long unused
    type: str = "pull"


Destination = (
    HttpDestination | PullDestination | EmailDestination | FtpDestination | SftpDestination
)
# The destinations a dispatcher pushes to (everything but pull).
PushDestination = HttpDestination | EmailDestination | FtpDestination | SftpDestination


@dataclass(frozen=True, slots=True)
class Route:
    event_types: frozenset[str]
    destinations: tuple[str, ...]
    match: tuple[tuple[str, frozenset[str]], ...] = ()


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str = "http://127.0.0.1:8080"
    trusted_proxies: tuple[str, ...] = ()
    # Host header names the console, admin API and tokenless routes answer (relay.web.guard)
    allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS
    public_hosts: tuple[str, ...] = ("127.0.0.1",)  # tracking links' hosts (public_url's)
    head_timeout_s: float = 10.0  # a whole request head within this, or the socket closes
    body_timeout_s: float = 60.0  # a whole request body within this
    idle_timeout_s: float = 75.0  # an idle keep-alive connection closes after this
    max_connections: int = 1000  # beyond this, silent sockets are closed, then 503 (but /healthz)

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)


@dataclass(frozen=True, slots=True)
class StorageConfig:
    path: Path = Path("relay.db")
    retention_s: float = 7 * 86400.0
    backend: str = "sqlite"
    dsn: str | None = None
    pool_size: int = 8


@dataclass(frozen=True, slots=True)
class IngestConfig:
    tokens: tuple[str, ...] = ()
    max_body_bytes: int = 16 * 1024 * 1024
    max_events: int = 10_000
    # Events waiting for the writer beyond which ingest sheds load with 503: the writer is
    # behind (or storage stalls), and the queue must not grow without bound in memory.
    max_queued: int = 200_000


@dataclass(frozen=True, slots=True)
class TrackingConfig:
    secrets: tuple[str, ...] = ()
    ip: str = "full"
    unsubscribe_on_get: bool = False
    bots: str = "flag"  # flag | drop
    bot_memory_s: float = 600.0  # how long a honeypot or HEAD visitor stays marked a scanner


@dataclass(frozen=True, slots=True)
class ConsoleConfig:
    tokens: tuple[str, ...] = ()
    read_only: bool = False
    show_emails: bool = False
    # Unsubscribes and complaints still undelivered after this are flagged on the console
    # (mailbox providers require unsubscribes honoured within 48 h).
    unsub_deadline_s: float = 86400.0


@dataclass(frozen=True, slots=True)
class Config:
    source: str = "<embedded defaults>"
    server: ServerConfig = ServerConfig()
    storage: StorageConfig = StorageConfig()
    ingest: IngestConfig = IngestConfig()
    tracking: TrackingConfig = TrackingConfig()
    console: ConsoleConfig = ConsoleConfig()
    dispatch_log: str = "dispatch.log"
    destinations: dict[str, Destination] = field(
        default_factory=lambda: {"default": PullDestination("default")}
    )
    routes: tuple[Route, ...] = (Route(EVENT_TYPES, ("default",)),)


def node_name(config: Config) -> str:
    """This node's name among several sharing a PostgreSQL queue: `$RELAY_NODE`, else the
    host name and listen port, so two nodes on one host differ without configuration (each
    frees only its own claims at start) and a restarted node is the same node again. On
    port 0 (tests), the process id stands in for the port."""
    if name := os.environ.get("RELAY_NODE"):
        return name
    port = config.server.port or f"pid{os.getpid()}"
    return f"{socket.gethostname()}:{port}"


def find_config(explicit: str | None) -> Path | None:
    """`-c PATH`, else $RELAY_CONFIG, else ./relay.toml, else /etc/relay/relay.toml, else None."""
    if explicit:
        return Path(explicit)
    if env := os.environ.get("RELAY_CONFIG"):
        return Path(env)
    return next((Path(p) for p in SEARCH_PATH if Path(p).is_file()), None)


def load(path: Path | None, listen: str | None = None, db: str | None = None) -> Config:
    """The config at `path` (None: the embedded defaults); `listen` and `db` are the
    command line's `--listen` and `--db`, which override `server.listen` and `storage.path`."""
    if path is None:
        data: dict = {}
        name = "<embedded defaults>"
        base_dir = Path.cwd()
    else:
        name = str(path)
        base_dir = path.parent
        try:
            data = tomllib.loads(path.read_text())
        except OSError as exc:
            raise ConfigError(f"{name}: cannot read: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{name}: not valid TOML: {exc}") from None
    if listen is not None:
        data.setdefault("server", {})["listen"] = listen
    if db is not None:
        data.setdefault("storage", {})["path"] = str(Path(db).absolute())
    if path is None and listen is None and db is None:
        return Config()
    top = Table(data, "", name)
    config = _parse(top, base_dir)
    if top.problems:
        raise ConfigError(*top.problems)
    return config


def _parse(top: Table, base_dir: Path) -> Config:
    server = _server(top.table("server"))
    storage = _storage(top.table("storage"), base_dir)
    ingest = _ingest(top.table("ingest"), server)
    tracking = _tracking(top.table("tracking"))
    console = _console(top.table("console"))
    log = top.table("log")
    dispatch_log = log.str("dispatch", "dispatch.log")
    if dispatch_log != "-":
        dispatch_log = str(base_dir / dispatch_log)
    log.done()
    if not top.has("destinations") and not top.has("routes"):  # the embedded pair
        destinations, routes = Config().destinations, Config().routes
        if not server.loopback:  # its pull API would be open to the network
            top.problem(
                "required: the embedded pull destination `default` has no tokens, and"
                f" server.listen is not loopback ({server.host}); define [destinations.default]"
                ' with type = "pull" and tokens, and [[routes]]',
                "destinations",
            )
    else:
        dests_table = top.table("destinations")
        destinations = {}
        for name in list(dests_table.data):
            if (dest := _destination(dests_table.table(name), name, server, base_dir)) is not None:
                destinations[name] = dest
        routes = _routes(top, set(dests_table.data))
    top.done()
    return Config(
        top.file, server, storage, ingest, tracking, console, dispatch_log, destinations, routes
    )


def _server(t: Table) -> ServerConfig:
    listen = t.str("listen", "127.0.0.1:8080")
    try:
        host, port = parse_listen(listen)
    except ValueError as exc:
        t.problem(str(exc), "listen")
        listen, host, port = "127.0.0.1:8080", "127.0.0.1", 8080
    public_url = t.str("public_url", f"http://{listen}").rstrip("/")
    _require_http_url(t, "public_url", public_url)
    proxies = t.str_list("trusted_proxies")
    for i, proxy in enumerate(proxies):
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            t.problem(f"{proxy!r} is not an IP address or network", f"trusted_proxies[{i}]")
    default_hosts = tuple(dict.fromkeys((_bracketed(host), *LOOPBACK_HOSTS)))
    cfg = ServerConfig(
        host,
        port,
        public_url,
        proxies,
        allowed_hosts=_hosts(t, "allowed_hosts", default_hosts),
        public_hosts=_hosts(t, "public_hosts", (_bracketed(urlsplit(public_url).hostname),)),
        head_timeout_s=_positive(t, "head_timeout", "10s"),
        body_timeout_s=_positive(t, "body_timeout", "60s"),
        idle_timeout_s=_positive(t, "idle_timeout", "75s"),
        max_connections=t.int("max_connections", 1000, low=1, high=1_000_000),
    )
    t.done()
    return cfg


def _bracketed(host: str | None) -> str:
    """A host as a Host header carries it: an IPv6 address in brackets, lowercased."""
    host = (host or "").lower()
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _hosts(t: Table, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
    """Host names without a port (any port matches); `"*"` means any host."""
    given = t.str_list(key)
    if not t.has(key):
        return default
    hosts = []
    for i, raw in enumerate(given):
        host = raw.strip().lower().rstrip(".")
        if host != "*" and (
            not host
            or host.startswith("[") != host.endswith("]")
            or (":" in host and not host.startswith("["))
            or any(c in host for c in "/@?# ")
        ):
            t.problem(
                f"{raw!r} is not a host name without a port (e.g. relay.example.com, [::1])",
                f"{key}[{i}]",
            )
            continue
        hosts.append(_bracketed(host.strip("[]")) if host.startswith("[") else host)
    return tuple(hosts)


def _positive(t: Table, key: str, default: str) -> float:
    value = t.duration(key, default)
    if value <= 0:
        t.problem("must be more than 0", key)
        return parse_duration(default)
    return value


def _storage(t: Table, base_dir: Path) -> StorageConfig:
    backend = t.choice("backend", ("sqlite", "postgres"), "sqlite")
    dsn = t.secret("dsn")
    if backend == "postgres" and not dsn:
        t.problem("the postgres backend needs a dsn (postgresql://user:pass@host/db)", "dsn")
    path = base_dir / t.str("path", "relay.db")
    cfg = StorageConfig(
        path=path,
        retention_s=t.duration("retention", "7d"),
        backend=backend,
        dsn=dsn,
        pool_size=t.int("pool_size", 8, low=1),
    )
    t.done()
    return cfg


def _ingest(t: Table, server: ServerConfig) -> IngestConfig:
    cfg = IngestConfig(
        tokens=t.secrets("tokens"),
        max_body_bytes=t.int("max_body_bytes", 16 * 1024 * 1024, low=1024),
        max_events=t.int("max_events", 10_000, low=1, high=100_000),
        max_queued=t.int("max_queued", 200_000, low=1),
    )
    t.done()
    if not cfg.tokens and not server.loopback:
        t.problem(f"required when server.listen is not loopback ({server.host})", "tokens")
    return cfg


def _tracking(t: Table) -> TrackingConfig:
    cfg = TrackingConfig(
        secrets=t.secrets("secrets"),
        ip=t.choice("ip", ("full", "truncated", "none"), "full"),
        unsubscribe_on_get=t.bool("unsubscribe_on_get", False),
        bots=t.choice("bots", ("flag", "drop"), "flag"),
        bot_memory_s=t.duration("bot_memory", "10m"),
    )
    t.done()
    return cfg


def _console(t: Table) -> ConsoleConfig:
    cfg = ConsoleConfig(
        tokens=t.secrets("tokens"),
        read_only=t.bool("read_only", False),
        show_emails=t.bool("show_emails", False),
        unsub_deadline_s=t.duration("unsub_deadline", "24h"),
    )
    t.done()
    return cfg


def _retry(t: Table) -> RetryPolicy:
    d = RetryPolicy()
    policy = RetryPolicy(
        initial_s=t.duration("initial", d.initial_s),
        max_s=t.duration("max", d.max_s),
        multiplier=t.float("multiplier", d.multiplier, low=1.0),
        max_attempts=t.int("max_attempts", d.max_attempts, low=1),
        max_age_s=t.duration("max_age", d.max_age_s),
    )
    t.done()
    if policy.max_s < policy.initial_s:
        t.problem("must not be less than initial", "max")
    return policy


def _circuit(t: Table) -> CircuitPolicy:
    d = CircuitPolicy()
    policy = CircuitPolicy(
        failures=t.int("failures", d.failures, low=0),
        cooldown_s=t.duration("cooldown", d.cooldown_s),
        max_cooldown_s=t.duration("max_cooldown", d.max_cooldown_s),
    )
    t.done()
    if policy.max_cooldown_s < policy.cooldown_s:
        t.problem("must not be less than cooldown", "max_cooldown")
    return policy


def _destination(t: Table, name: str, server: ServerConfig, base_dir: Path) -> Destination | None:
    """One destination, or None when it has problems (noted; the rest is read on)."""
    if not name.replace("-", "").replace("_", "").isalnum():
        t.problem("destination names may use letters, digits, - and _ only")
    if not t.has("type"):
        t.problem("required", "type")
        return None
    before = len(t.problems)
    kind = t.choice("type", DESTINATION_TYPES, "")
    dest: Destination | None = None
    try:
        if kind == "http":
            dest = _http(t, name)
        elif kind == "pull":
            dest = _pull(t, name, server)
        elif kind:
            parse = {"email": parse_email, "ftp": parse_ftp, "sftp": parse_sftp}[kind]
            dest = parse(t, name, _retry(t.table("retry")), base_dir)
    except ConfigError as exc:  # a problem that made the rest of this table meaningless
        t.problems.extend(exc.problems)
    if kind:
        t.done()
    return dest if len(t.problems) == before else None


def _http(t: Table, name: str) -> HttpDestination:
    url = t.str("url")
    if url is None:
        t.problem("required", "url")
        url = "http://invalid"
    _require_http_url(t, "url", url)
    headers_t = t.table("headers")
    headers = tuple(_header(headers_t, k) for k in list(headers_t.data))
    headers_t.done()
    secret = t.secret("signing_secret")
    dest = HttpDestination(
        name=name,
        url=url,
        method=t.choice("method", ("POST", "GET"), "POST"),
        format=t.choice("format", ("json", "form", "pure360"), "json"),
        headers=headers,
        signing_key=_signing_key(t, secret) if secret else None,
        timeout_s=t.duration("timeout", "10s"),
        delay_s=t.duration("delay", "0s"),
        batch_size=t.int("batch_size", 1, low=1, high=1000),
        concurrency=t.int("concurrency", 8, low=1, high=1000),
        source_address=t.str("source_address"),
        retry=_retry(t.table("retry")),
        circuit=_circuit(t.table("circuit")),
        reject=t.int_list("reject", (410,), low=400, high=599),
    )
    if dest.batch_size > 1 and (dest.method, dest.format) != ("POST", "json"):
        t.problem('batch_size > 1 needs method = "POST" and format = "json"', "batch_size")
    return dest


def _pull(t: Table, name: str, server: ServerConfig) -> PullDestination:
    dest = PullDestination(
        name=name,
        tokens=t.secrets("tokens"),
        lease_s=t.duration("lease", "5m"),
        max_batch=t.int("max_batch", MAX_PULL_BATCH, low=1, high=MAX_PULL_BATCH),
        delay_s=t.duration("delay", "0s"),
        session_idle_s=t.duration("session_idle", "20m"),
    )
    if dest.session_idle_s <= 0:
        raise t.error("must be more than 0s", "session_idle")
    if not dest.tokens and not server.loopback:
        t.problem(f"required when server.listen is not loopback ({server.host})", "tokens")
    return dest


_TOKEN_CHARS = frozenset("!#$%&'*+-.^_`|~" + string.ascii_letters + string.digits)


def _header(t: Table, name: str) -> tuple[str, str]:
    """A custom header: an RFC 9110 token as its name, printable ASCII as its value."""
    if not name or not set(name) <= _TOKEN_CHARS:
        t.problem("a header name is letters, digits and !#$%&'*+-.^_`|~ only", name)
    value = t.secret(name) or ""
    if not value.isascii() or not value.isprintable():
        t.problem("a header value must be printable ASCII", name)
    return name, value


def _signing_key(t: Table, secret: str) -> bytes:
    """Standard Webhooks: `whsec_<base64>` is the base64 of the key; other strings are used as is."""
    if not secret.startswith("whsec_"):
        return secret.encode()
    try:
        return base64.b64decode(secret[6:], validate=True)
    except ValueError:
        t.problem("whsec_ secret is not valid base64", "signing_secret")
        return b""


def _require_http_url(t: Table, key: str, url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        t.problem(f"must be an http(s) URL, got {url!r}", key)


def _routes(top: Table, destinations: set[str]) -> tuple[Route, ...]:
    """The `[[routes]]`; none at all is refused unless written `routes = []` on purpose."""
    if not top.has("routes"):
        top.problem(
            "required: without [[routes]] every event would be unrouted (stored, delivered"
            ' nowhere); add [[routes]] with events = ["*"] and destinations = [...], or write'
            " routes = [] if that is what you want",
            "routes",
        )
    raw = top.raw("routes", [])
    if not isinstance(raw, list):
        top.problem("must be an array of tables ([[routes]])", "routes")
        return ()
    return tuple(_route(top.child(r, f"routes[{i}]"), destinations) for i, r in enumerate(raw))


def _route(t: Table, destinations: set[str]) -> Route:
    names = t.str_list("events")
    if not names:
        t.problem('required: a list of triggers or event types, or ["*"]', "events")
    types: set[str] = set()
    for name in names:
        if name == "*":
            types |= EVENT_TYPES
        elif (etype := event_type_for(name)) is None:
            t.problem(f"{name!r} is not an event type or trigger", "events")
        else:
            types.add(etype)
    dests = t.str_list("destinations")
    if not dests:
        t.problem("required: a list of destination names", "destinations")
    for d in dests:
        if d not in destinations:
            known = ", ".join(sorted(destinations)) or "none are defined"
            t.problem(f"unknown destination {d!r} (known: {known})", "destinations")
    match_t = t.table("match")
    match = tuple(
        (key, frozenset(str(v) for v in match_t.str_list(key)))
        for key in ("mail_class", "listid")
        if match_t.has(key)
    )
    match_t.done()
    t.done()
    return Route(frozenset(types), dests, match)
