"""The recipient-facing routes: open pixel, click redirect, unsubscribe, signup.

These are public and hostile-facing: a token that does not verify records nothing and
never redirects; the pixel answers its GIF whatever happens; nothing here raises a 500
for bad input. Each hit becomes one event, committed before the answer.
"""

from __future__ import annotations

import hashlib
import html
import ipaddress
import logging
import time

from aiohttp import web
from multidict import CIMultiDict

from ..current import Current
from ..domain.bots import BotDetector, Verdict
from ..domain.events import new_id
from ..domain.text import ascii_uri
from ..domain.tokens import is_safe_url
from ..intake import Intake

log = logging.getLogger("relay.tracking")

# The 43-byte transparent 1×1 GIF.
PIXEL = bytes.fromhex(
    "47494638396101000100800000000000ffffff21f90401000000002c00000000010001000002024401003b"
)
NO_STORE = {
    "Cache-Control": "no-store, no-cache, must-revalidate, private, max-age=0",
    "Pragma": "no-cache",
    "Expires": "0",
}
MAX_UA = 512
PIXEL_HEADERS = CIMultiDict({**NO_STORE, "Content-Type": "image/gif"})  # copied per response


def client_ip(request: web.Request, trusted: tuple[str, ...]) -> str | None:
    """The peer address; behind a trusted proxy, the last X-Forwarded-For hop it vouches for."""
    peer = request.remote
    if not trusted or peer is None or not _in(peer, trusted):
        return peer
    hops = [h.strip() for h in request.headers.get("X-Forwarded-For", "").split(",") if h.strip()]
    for hop in reversed(hops):
        if not _in(hop, trusted):
            return hop
    return peer


def _in(ip: str, networks: tuple[str, ...]) -> bool:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(n, strict=False) for n in networks)


def kept_ip(ip: str | None, policy: str) -> str | None:
    """`tracking.ip`: full, truncated (IPv4 /24, IPv6 /48), or none."""
    if ip is None or policy == "none":
        return None
    if policy == "full":
        return ip
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # a dual-stack socket's IPv4 peer: truncate it as IPv4
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False).network_address)


def _message_fields(fields: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in fields.items() if k != "url"}


# A form, or no declared body at all (aiohttp reads an absent type as octet-stream).
FORM_TYPES = frozenset(
    {"application/x-www-form-urlencoded", "multipart/form-data", "application/octet-stream"}
)


async def _form(request: web.Request):
    """The posted form; a body that is not one (JSON, bad bytes, a multipart without its
    boundary) is a 400, never a 500 — and never read as an empty form that records."""
    if request.content_type not in FORM_TYPES:
        raise web.HTTPBadRequest(text=f"expected a form post, not {request.content_type[:100]}")
    try:
        return await request.post()
    except web.HTTPException:
        raise  # 413 and the like
    except Exception:  # aiohttp raises ValueError, UnicodeDecodeError, BadHttpMessage, ...
        raise web.HTTPBadRequest(text="malformed form body") from None


def _page(title: str, body: str, status: int = 200) -> web.Response:
    text = (
        f'<!doctype html><html><head><meta charset="utf-8"><meta name="viewport" '
        f'content="width=device-width"><meta name="robots" content="noindex">'
        f'<title>{html.escape(title)}</title></head><body style="font-family:sans-serif;'
        f'max-width:32em;margin:3em auto;padding:0 1em">{body}</body></html>'
    )
    return web.Response(text=text, status=status, content_type="text/html", headers=NO_STORE)


def unsubscribed_page() -> web.Response:
    return _page(
        "Unsubscribed",
        "<h1>You are unsubscribed</h1><p>You will not get these emails any more.</p>",
    )


def _plausible_email(email: str) -> bool:
    local, at, domain = email.rpartition("@")
    return (
        bool(at)
        and bool(local)
        and "." in domain.strip(".")
        and len(email) <= 254
        and not any(c.isspace() or c in "<>\"'" for c in email)
    )


async def thanks_page(request: web.Request) -> web.Response:
    return _page("Thank you", "<h1>Thank you</h1><p>You are signed up.</p>")


async def unsubscribed(request: web.Request) -> web.Response:
    return unsubscribed_page()


class Tracking:
    """The routes, over the intake, the bot memory and the current config and signer
    (trusted proxies, `[tracking]` settings, secrets: read per request, so a reload counts
    at once). Built once; the hot paths (pixel, click) read attributes, look nothing up."""

    def __init__(self, intake: Intake, bots: BotDetector, current: Current) -> None:
        self._intake = intake
        self._bots = bots
        self._current = current

    async def _record(
        self,
        request: web.Request,
        etype: str,
        fields: dict,
        verdict: Verdict,
        source: str,
        event_id: str | None = None,
    ) -> bool:
        """Commit one tracking event; False if it could not be stored (logged, never raised)."""
        ip = client_ip(request, self._current.config.server.trusted_proxies)
        user_agent = request.headers.get("User-Agent")
        return await self._store(etype, fields, verdict, source, ip, user_agent, event_id)

    async def _store(
        self,
        etype: str,
        fields: dict,
        verdict: Verdict,
        source: str,
        peer: str | None,
        user_agent: str | None,
        event_id: str | None = None,
    ) -> bool:
        """`_record` for a caller that already has the client's address and user agent."""
        tracking = self._current.config.tracking
        if verdict.is_bot and tracking.bots == "drop":
            return True
        now = time.time()
        ip = kept_ip(peer, tracking.ip)
        event = {
            "event_type": etype,
            "id": event_id or new_id(),
            "event_time": int(now),
            **fields,
            "user_agent": user_agent[:MAX_UA] if user_agent else "",
            "is_bot": verdict.is_bot,
            "bot_reason": verdict.reason,
        }
        if ip is not None:
            event["engine_ip"] = ip
        intake = self._intake
        return await intake.keep(
            [intake.event(event, now, event_id is not None, first=True)], source
        )

    def _token(self, request: web.Request, kind: str) -> dict[str, str] | None:
        return self._current.signer.read(kind, request.match_info["token"])

    async def open_pixel(self, request: web.Request) -> web.Response:
        current = self._current
        fields = current.signer.read("open", request.match_info["token"])  # a fresh dict
        # HEAD (aiohttp adds it to GET routes) is a link checker, not an image load: not an open.
        if fields is not None and fields.get("email") and request.method == "GET":
            ip = client_ip(request, current.config.server.trusted_proxies)
            user_agent = request.headers.get("User-Agent")
            verdict = self._bots.open(ip, user_agent)
            fields.pop("url", None)  # _message_fields, in place
            await self._store("engine_open", fields, verdict, "pixel", ip, user_agent)
        return web.Response(body=PIXEL, headers=PIXEL_HEADERS)

    async def click(self, request: web.Request) -> web.Response:
        current = self._current
        token = request.match_info["token"]
        signer = current.signer
        # A token has exactly one kind, so asking "click?" before "honeypot?" changes nothing.
        fields = signer.read("click", token)  # a fresh dict; a url in it is safe (verify checks)
        if fields is None:
            if signer.read("honeypot", token) is not None:
                # only a machine follows an invisible link
                self._bots.honeypot(client_ip(request, current.config.server.trusted_proxies))
                return web.Response(text="", headers=NO_STORE)
            raise web.HTTPNotFound(text="unknown link")
        target = fields.get("url")
        if not target:  # verify() only hands back a url that is_safe_url accepts
            raise web.HTTPNotFound(text="unknown link")
        ip = client_ip(request, current.config.server.trusted_proxies)
        if request.method == "HEAD":  # link checkers: answer like a GET, record nothing
            self._bots.head(ip)
            return web.Response(status=302, headers={"Location": ascii_uri(target), **NO_STORE})
        email = fields.get("email")
        if email:
            user_agent = request.headers.get("User-Agent")
            key = (email, fields.get("sendid", ""))
            verdict = self._bots.click(ip, user_agent, key, target)
            del fields["url"]  # _message_fields, in place
            fields["click_url"] = target
            await self._store("engine_click", fields, verdict, "click", ip, user_agent)
        return web.Response(status=302, headers={"Location": ascii_uri(target), **NO_STORE})

    async def unsubscribe_page(self, request: web.Request) -> web.Response:
        """GET shows a confirm button and changes nothing: link scanners fetch every link."""
        fields = self._token(request, "unsub")
        if fields is None:
            raise web.HTTPNotFound(text="unknown link")
        unsubscribe_on_get = self._current.config.tracking.unsubscribe_on_get
        if unsubscribe_on_get and request.method == "GET":  # never on HEAD
            await self._unsubscribe(request, fields)
            return unsubscribed_page()
        who = html.escape(fields.get("email", "this address"))
        return _page(
            "Unsubscribe",
            f"<h1>Unsubscribe</h1><p>Stop sending these emails to {who}?</p>"
            '<form method="post"><input type="hidden" name="confirm" value="1">'
            '<button type="submit">Unsubscribe</button></form>',
        )

    async def _unsubscribe(self, request: web.Request, fields: dict[str, str]) -> bool:
        # One id per token: a second confirm or one-click post is stored once (idempotent).
        event_id = "unsub-" + hashlib.sha256(request.match_info["token"].encode()).hexdigest()[:32]
        extra = {"click_url": fields["url"]} if "url" in fields else {}
        return await self._record(
            request,
            "engine_unsub",
            {**_message_fields(fields), **extra},
            Verdict(False, None),
            "unsub",
            event_id,
        )

    async def unsubscribe(self, request: web.Request) -> web.Response:
        """POST: the confirm button (303 onwards) or RFC 8058 one-click (200, nothing else)."""
        fields = self._token(request, "unsub")
        if fields is None:
            raise web.HTTPNotFound(text="unknown link")
        form = await _form(request)
        stored = await self._unsubscribe(request, fields)
        if form.get("List-Unsubscribe") == "One-Click":
            if not stored:
                raise web.HTTPServiceUnavailable(text="try again", headers={"Retry-After": "30"})
            return web.Response(text="unsubscribed", headers=NO_STORE)
        if not stored:
            return _page(
                "Try again",
                "<h1>Something went wrong</h1><p>Please try again in a minute.</p>",
                503,
            )
        landing = fields.get("url")
        raise web.HTTPSeeOther(landing if landing and is_safe_url(landing) else "/unsubscribed")

    async def signup(self, request: web.Request) -> web.Response:
        """A signup form posts `email` here; `website` is a honeypot people never see or fill."""
        fields = self._token(request, "signup")
        if fields is None:
            raise web.HTTPNotFound(text="unknown form")
        form = await _form(request)
        thanks = fields.get("url") if is_safe_url(fields.get("url", "")) else "/thanks"
        if form.get("website"):  # a bot filled the hidden field: pretend, record nothing
            raise web.HTTPSeeOther(thanks)
        email = str(form.get("email", "")).strip()
        if not _plausible_email(email):
            return _page(
                "Check your address",
                "<h1>That email address does not look right</h1>"
                "<p>Please go back and check it.</p>",
                400,
            )
        message = {k: v for k, v in _message_fields(fields).items() if k != "email"}
        if not await self._record(
            request, "optin", {**message, "email": email}, Verdict(False, None), "signup"
        ):
            return _page(
                "Try again",
                "<h1>Something went wrong</h1><p>Please try again in a minute.</p>",
                503,
            )
        raise web.HTTPSeeOther(thanks)

    def add_routes(self, app: web.Application) -> None:
        # Any text before .gif, even with / or braces the default pattern refuses: the pixel
        # answers the GIF to every request for it, so a mangled link still shows no broken
        # image.
        app.router.add_get(r"/o/{token:[\s\S]+}.gif", self.open_pixel)
        app.router.add_get("/c/{token}", self.click)  # aiohttp adds HEAD for GET routes
        app.router.add_get("/u/{token}", self.unsubscribe_page)
        app.router.add_post("/u/{token}", self.unsubscribe)
        app.router.add_post("/s/{token}", self.signup)
        app.router.add_get("/thanks", thanks_page)
        app.router.add_get("/unsubscribed", unsubscribed)
