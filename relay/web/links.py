"""POST /v1/links and /v1/rewrite: make signed tracking URLs for the mail engine."""

from __future__ import annotations

import asyncio

import orjson
from aiohttp import web

from ..current import Current
from ..domain.links import LinkError, make_link, message_fields
from ..domain.tokens import FIELDS, Signer, TokenError
from .common import JsonError, check_bearer, json_response

MAX_LINKS = 10_000
ONE_CLICK = "List-Unsubscribe=One-Click"
MAX_HTML = 4 * 1024 * 1024
REWRITE_KEYS = ("html", *(f for f in FIELDS if f != "url"))  # a rewrite makes its own urls


def _signed(signer: Signer, item: object, index: int = 0) -> str:
    try:
        return make_link(signer, item, index)
    except LinkError as exc:
        raise JsonError(400, "invalid links", errors=[exc.as_dict()]) from None


class Links:
    """The two routes, over the current config (the ingest tokens) and its signer: a
    reload's new tokens, secrets or public URL sign the next request's links."""

    def __init__(self, current: Current) -> None:
        self._current = current

    async def _json_body(self, request: web.Request) -> object:
        check_bearer(request, self._current.config.ingest.tokens)
        if request.content_type not in ("application/json", "text/json"):
            raise JsonError(415, "Content-Type must be application/json")
        try:
            return orjson.loads(await request.read())
        except orjson.JSONDecodeError as exc:
            raise JsonError(400, f"malformed JSON: {exc}") from None

    async def post_links(self, request: web.Request) -> web.Response:
        body = await self._json_body(request)
        signer = self._current.signer
        if isinstance(body, list):
            if len(body) > MAX_LINKS:
                raise JsonError(413, f"at most {MAX_LINKS} links a request")
            return json_response(
                {"urls": [_signed(signer, item, i) for i, item in enumerate(body)]}
            )
        return json_response({"url": _signed(signer, body)})

    async def post_rewrite(self, request: web.Request) -> web.Response:
        from ..domain.rewrite import rewrite

        body = await self._json_body(request)
        if not isinstance(body, dict) or not isinstance(body.get("html"), str):
            raise JsonError(
                400,
                "invalid rewrite",
                errors=[{"index": 0, "field": "html", "message": "required: a string"}],
            )
        signer = self._current.signer
        try:
            fields = message_fields(body, 0, REWRITE_KEYS)
        except LinkError as exc:
            raise JsonError(400, "invalid links", errors=[exc.as_dict()]) from None
        fields.pop("url")
        if not fields["email"]:
            raise JsonError(
                400,
                "invalid rewrite",
                errors=[{"index": 0, "field": "email", "message": "required"}],
            )

        def link(kind: str, url: str | None) -> str:
            try:
                return signer.url(kind, **fields, url=url)
            except TokenError:
                if kind == "click":
                    return url or ""  # a target we will not sign: the link stays unwrapped
                return signer.url(
                    kind, **fields
                )  # e.g. an unsub landing page we won't sign: drop it

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

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/links", self.post_links)
        app.router.add_post("/v1/rewrite", self.post_rewrite)
