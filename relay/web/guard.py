"""The HTTP surface's one browser-safety policy: which Host, which site, which body type.

relay's defaults are loopback-open (no tokens while it listens on 127.0.0.1), and every
browser on the machine can reach 127.0.0.1. So, before any handler runs:

- **Host allow-list** (DNS rebinding): the console and the admin API answer only when the
  `Host` header names one of `server.allowed_hosts` (default: the listen address,
  `localhost`, `127.0.0.1`, `[::1]`, any port); the other API routes check it too while
  they need no token (loopback-open). Tracking routes accept `server.public_hosts` as well
  (default: the host of `server.public_url`). `/healthz` and `/readyz` answer any host.
  A wrong host is a 421 naming it.
- **Cross-site refusal** (CSRF, Fetch Metadata): the API and admin routes are not meant for
  browsers on other sites, so a request a browser marks `Sec-Fetch-Site: cross-site` or
  `same-site`, or an `Origin` that is not relay's own, is a 403 — reads too, since a pull
  lease is a GET that changes state. Console pages may be opened from a link anywhere,
  but a console POST must be same-origin.
- **Declared JSON bodies**: an API or admin POST with a body must declare JSON (NDJSON for
  `/v1/events`); a form's `text/plain`, urlencoded or multipart body is a 415 even when it
  parses as JSON, and even when it is empty. A request without `Content-Type` is no
  browser's form.

Tracking routes (pixel, click, unsubscribe, signup, one-click) stay open to every origin,
as recipients' mail clients and browsers must reach them. The work per request is a path
split, a header lookup or two and a frozenset membership: this runs on the hot path.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from ..config import Config, PullDestination
from ..current import Current
from .common import JsonError
from .limits import ConnectionLimits

TRACKING, HEALTH, CONSOLE, ADMIN, API = "tracking", "health", "console", "admin", "api"
SOAP = "soap"  # answers in SOAP Faults: checks its own site and body type (relay.soap.routes)
_BY_SEGMENT = {
    "o": TRACKING,
    "c": TRACKING,
    "u": TRACKING,
    "s": TRACKING,
    "thanks": TRACKING,
    "unsubscribed": TRACKING,
    "healthz": HEALTH,
    "readyz": HEALTH,
    "console": CONSOLE,
    "soap": SOAP,
}
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
FOREIGN_SITES = frozenset({"cross-site", "same-site"})
JSON_TYPES = frozenset({"application/json", "text/json"})
NDJSON_TYPES = frozenset(
    {"application/x-ndjson", "application/jsonl", "application/x-jsonlines", "application/ndjson"}
)
EVENTS_TYPES = JSON_TYPES | NDJSON_TYPES
# What an HTML form can send without a preflight: never an API body.
FORM_TYPES = frozenset({"text/plain", "application/x-www-form-urlencoded", "multipart/form-data"})
OPEN_ROUTES = ("/v1/events", "/v1/links", "/v1/rewrite")  # open while ingest.tokens is empty


def route_class(path: str) -> str:
    """Which part of the surface `path` belongs to, from its first segment (no regex)."""
    segment = path[1:].partition("/")[0]
    if segment == "v1":
        return ADMIN if path.startswith("/v1/admin/") or path == "/v1/admin" else API
    return _BY_SEGMENT.get(segment, API)


_HOSTS_SEEN: dict[str, str] = {}  # Host header -> host name: clients send few distinct ones
MAX_HOSTS_SEEN = 1024


def host_name(header: str) -> str:
    """The host of a `Host` header, lowercased, without its port (`[::1]` keeps brackets)."""
    name = _HOSTS_SEEN.get(header)
    if name is None:
        if len(_HOSTS_SEEN) >= MAX_HOSTS_SEEN:
            _HOSTS_SEEN.clear()
        name = _HOSTS_SEEN[header] = _parse_host(header)
    return name


def _parse_host(header: str) -> str:
    host = header.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end > 0 else host
    name, sep, port = host.rpartition(":")
    if sep and (port.isdigit() or not port):
        host = name
    return host.rstrip(".")


def own_origin(request: web.BaseRequest, origin: str) -> bool:
    """Whether an `Origin` header is relay's own: http(s) and exactly the request's Host."""
    scheme, sep, rest = origin.partition("://")
    host = request.headers.get("Host")
    return bool(sep) and scheme in ("http", "https") and host is not None and rest == host.lower()


def same_origin(request: web.BaseRequest) -> bool:
    """A console POST's test: `Sec-Fetch-Site: same-origin` or `none` (typed by the user),
    else an `Origin` that is relay's own. A request with neither header is not a browser's
    cross-site form (every browser sends `Origin` on a POST), and it still needs its token."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = request.headers.get("Origin")
    if origin is not None:
        return own_origin(request, origin.lower())
    return not any(name.lower().startswith("sec-fetch-") for name in request.headers)


@dataclass(frozen=True, slots=True)
class Policy:
    """The allow-lists, built once per config (sets, so each check is one lookup)."""

    allowed_hosts: frozenset[str] | None  # None: any host ("*")
    tracking_hosts: frozenset[str] | None
    loopback: bool
    ingest_open: bool
    pulls: dict[str, bool]  # pull destination -> open (no tokens)

    @classmethod
    def of(cls, config: Config) -> Policy:
        server = config.server
        allowed = None if "*" in server.allowed_hosts else frozenset(server.allowed_hosts)
        tracking = (
            None
            if allowed is None or "*" in server.public_hosts
            else allowed | frozenset(server.public_hosts)
        )
        pulls = {
            name: not d.tokens
            for name, d in config.destinations.items()
            if isinstance(d, PullDestination)
        }
        return cls(allowed, tracking, server.loopback, not config.ingest.tokens, pulls)

    def tokenless(self, path: str) -> bool:
        """Whether an API route answers without a token (what loopback-open means)."""
        if path.startswith("/v1/pull/"):
            return self.pulls.get(path[9:].partition("/")[0], True)
        if path in OPEN_ROUTES:
            return self.ingest_open
        return True  # /metrics, /v1/openapi.json, unknown paths

    def hosts_for(self, kind: str, path: str) -> frozenset[str] | None:
        """The hosts a route of `kind` accepts; None when any host will do."""
        if kind == TRACKING:
            return self.tracking_hosts
        if kind in (API, SOAP) and not (self.loopback and self.tokenless(path)):
            return None
        return self.allowed_hosts


def old_browser_lease(request: web.BaseRequest, policy: Policy) -> bool:
    """A pull lease with no token, by what says it is a browser (every browser's
    `User-Agent` begins `Mozilla/`) yet sends neither `Sec-Fetch-Site` nor `Origin`: an
    older browser, which a page on any site can make lease the feed with an `<img>` (it
    cannot read the answer, but the events would be hidden for a lease period). A pull
    client or curl, and every current browser (they send Fetch Metadata), are not this."""
    path = request.path
    return (
        path.startswith("/v1/pull/")
        and policy.tokenless(path)
        and request.headers.get("User-Agent", "").startswith("Mozilla/")
    )


def refusal(request: web.BaseRequest, policy: Policy) -> JsonError | None:
    """Why this request must not reach its handler, or None. The whole policy, in order."""
    path = request.path
    kind = route_class(path)
    if kind == HEALTH:
        return None
    hosts = policy.hosts_for(kind, path)
    if hosts is not None:
        header = request.headers.get("Host")
        if header is not None and host_name(header) not in hosts:
            return JsonError(
                421,
                f"host {header[:100]!r} is not in server.allowed_hosts"
                + (" or server.public_hosts" if kind == TRACKING else ""),
                field="Host",
            )
    if kind in (TRACKING, SOAP):
        return None
    headers = request.headers
    unsafe = request.method not in SAFE_METHODS
    if kind == CONSOLE:
        if unsafe and not same_origin(request):
            return JsonError(403, "Cross-site request refused.")
        return None
    site = headers.get("Sec-Fetch-Site")
    if site in FOREIGN_SITES:
        return JsonError(
            403, f"cross-site request refused (Sec-Fetch-Site: {site}): not a route for browsers"
        )
    origin = headers.get("Origin")
    if origin is not None and not own_origin(request, origin.lower()):
        return JsonError(403, f"cross-site request refused (Origin: {origin[:100]})")
    if site is None and origin is None and not unsafe and old_browser_lease(request, policy):
        return JsonError(
            403,
            "a browser that sends no Fetch Metadata cannot lease a pull feed without a token:"
            " give the destination tokens, or pull with a client",
        )
    # A Bearer token is never attached by a browser on its own, so a route that needs one
    # checks its body type itself, after the token (a stranger learns nothing); Basic
    # credentials are, so the admin API is always checked here.
    if unsafe and (kind == ADMIN or policy.tokenless(path)):
        content_type = headers.get("Content-Type")
        if content_type is not None:
            mime = content_type.partition(";")[0].strip().lower()
            legal = EVENTS_TYPES if path == "/v1/events" else JSON_TYPES
            # An empty body's type says nothing (clients label it octet-stream), unless it
            # is a form's: an empty text/plain form is how a page would post "pause".
            if mime in FORM_TYPES or (mime not in legal and request.content_length != 0):
                return JsonError(
                    415,
                    f"Content-Type must be application/json, got {mime[:100]!r}",
                    field="Content-Type",
                )
    return None


LIMITS = web.AppKey("connection_limits", ConnectionLimits)
CROWDED = {"Connection": "close", "Retry-After": "1"}


class Guard:
    """`refusal` and the connection cap, checked before every handler.

    Not a middleware of its own: the console's middleware calls `check` just before its
    handler (so a console refusal becomes an HTML page, as before), which spares every
    request one middleware layer. It is given the config in force (`Current`) and the
    limits rather than looking them up per request; the policy follows a reloaded config.
    """

    def __init__(self, current: Current, limits: ConnectionLimits) -> None:
        self._current = current
        self.limits = limits
        self._config: Config | None = None
        self._policy: Policy | None = None

    def check(self, request: web.BaseRequest) -> None:
        """Raise the `JsonError` this request gets instead of its handler's answer, if any."""
        config = self._current.config
        policy = self._policy
        if config is not self._config or policy is None:
            policy = self._policy = Policy.of(config)
            self._config = config
        refused = refusal(request, policy)
        if refused is not None:
            raise refused
        limits = self.limits
        if (
            limits.crowded
            and limits.over_cap(request.protocol)
            and route_class(request.path) != HEALTH
        ):
            raise JsonError(503, "too many open connections (server.max_connections)", CROWDED)


def install(app: web.Application, current: Current) -> Guard:
    """The guard and the connection limits the listening site shares with it (`LIMITS`);
    the caller hands `Guard.check` to the one middleware (`relay.web.front`)."""
    server = current.config.server
    limits = app[LIMITS] = ConnectionLimits(
        server.head_timeout_s, server.body_timeout_s, server.max_connections
    )
    return Guard(current, limits)
