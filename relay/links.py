"""POST /v1/links and /v1/rewrite: make signed tracking URLs for the mail engine."""

from __future__ import annotations

import asyncio

import orjson
from aiohttp import web

from .tokens import FIELDS, Signer, TokenError
from .web import RUNTIME, JsonError, check_bearer, json_response

LINK_KINDS = ("click", "open", "unsub", "signup")
MAX_LINKS = 10_000
ONE_CLICK = "List-Unsubscribe=One-Click"
MAX_HTML = 4 * 1024 * 1024


async def _json_body(request: web.Request) -> object:
    check_bearer(request, request.app[RUNTIME].config.ingest.tokens)
    if request.content_type not in ("application/json", "text/json"):
        raise JsonError(415, "Content-Type must be application/json")
    try:
        return orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        raise JsonError(400, f"malformed JSON: {exc}") from None


def _message_fields(
    item: dict, index: int, allowed: tuple[str, ...], what: str = "invalid links"
) -> dict[str, str | None]:
    """The message fields of a link request: each a string (a number is not an email), and
    no key the request does not take (a typo like `emial` is named, not ignored)."""
    for key in item:
        if key not in allowed:
            message = f"unknown key (allowed: {', '.join(allowed)})"
            raise JsonError(400, what, errors=[{"index": index, "field": key, "message": message}])
    fields = {}
    for name in FIELDS:
        value = item.get(name)
        if value is not None and not isinstance(value, str):
            raise JsonError(
                400, what, errors=[{"index": index, "field": name, "message": "must be a string"}]
            )
        fields[name] = value
    return fields


def make_link(signer: Signer, item: object, index: int = 0) -> str:
    """One signed URL from `{"kind", "email", "url", ...}`; a 400 naming the field if it can't be."""

    def bad(field: str, message: str) -> JsonError:
        return JsonError(
            400, "invalid links", errors=[{"index": index, "field": field, "message": message}]
        )

    if not isinstance(item, dict):
        raise bad("", "must be a JSON object")
    kind = item.get("kind")
    if kind not in LINK_KINDS:
        raise bad("kind", f"must be one of {', '.join(LINK_KINDS)}")
    fields = _message_fields(item, index, ("kind", *FIELDS))
    if kind == "click" and not fields["url"]:
        raise bad("url", "required for a click link")
    if kind in ("click", "open", "unsub") and not fields["email"]:
        raise bad("email", "required")
    try:
        return signer.url(kind, **fields)
    except TokenError as exc:
        field, _, message = str(exc).partition(": ")
        raise bad(field, message) from None


async def post_links(request: web.Request) -> web.Response:
    body = await _json_body(request)
    signer = request.app[RUNTIME].signer
    if isinstance(body, list):
        if len(body) > MAX_LINKS:
            raise JsonError(413, f"at most {MAX_LINKS} links a request")
        return json_response({"urls": [make_link(signer, item, i) for i, item in enumerate(body)]})
    return json_response({"url": make_link(signer, body)})


async def post_rewrite(request: web.Request) -> web.Response:
    from .rewrite import rewrite

    body = await _json_body(request)
    if not isinstance(body, dict) or not isinstance(body.get("html"), str):
        raise JsonError(
            400,
            "invalid rewrite",
            errors=[{"index": 0, "field": "html", "message": "required: a string"}],
        )
    signer = request.app[RUNTIME].signer
    allowed = ("html", *(f for f in FIELDS if f != "url"))
    fields = _message_fields(body, 0, allowed, "invalid rewrite")
    fields.pop("url")
    if not fields["email"]:
        raise JsonError(
            400, "invalid rewrite", errors=[{"index": 0, "field": "email", "message": "required"}]
        )

    def link(kind: str, url: str | None) -> str:
        try:
            return signer.url(kind, **fields, url=url)
        except TokenError:
            if kind == "click":
                return url or ""  # a target we will not sign: the link stays unwrapped
            return signer.url(kind, **fields)  # e.g. an unsub landing page we won't sign: drop it

    if len(body["html"]) > MAX_HTML:
        raise JsonError(413, f"html: at most {MAX_HTML} characters")
    # The tokenizer is pure Python (~0.35 µs a byte): keep big messages off the event loop.
    result = await asyncio.to_thread(rewrite, body["html"], link, signer.prefixes)
    unsub = result.list_unsubscribe or signer.url("unsub", **fields)
    return json_response(
        {
            "html": result.html,
            "headers": {"List-Unsubscribe": f"<{unsub}>", "List-Unsubscribe-Post": ONE_CLICK},
        }
    )
