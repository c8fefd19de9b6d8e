"""`POST /soap/pull` and `GET /soap/pull?wsdl`: the SOAP pull on the HTTP surface.

Every answer is XML: a `handleRequestResponse`, or a SOAP Fault (HTTP 500, as SOAP 1.1
over HTTP has it) when the envelope is wrong, with 413 for an oversized body, 415 for a
content type that is not SOAP 1.1's `text/xml`, 403 for a browser's cross-site request
(`Sec-Fetch-Site: cross-site` or `same-site`, or an `Origin` that is not relay's own), and
a `Server` Fault with 503 and Retry-After while the store cannot answer.
"""

from __future__ import annotations

import copy
from pathlib import Path

from aiohttp import web
from lxml import etree

from ..current import Current
from ..destinations.pull import Pull
from ..store import StorageUnavailable
from ..web.common import JsonError
from ..web.guard import own_origin
from .codec import Fault, build_fault, build_response, parse_call
from .service import PullService
from .sessions import SessionTable

MAX_BODY = 64 * 1024  # a handleRequest is a few hundred bytes; maps of parameters stay small
WSDL_FILE = Path(__file__).with_name("pull.wsdl")
_SOAP_ADDRESS = "{http://schemas.xmlsoap.org/wsdl/soap/}address"
_WSDL = etree.parse(str(WSDL_FILE), etree.XMLParser(resolve_entities=False, no_network=True))


def _xml(body: bytes, status: int = 200) -> web.Response:
    return web.Response(body=body, status=status, content_type="text/xml", charset="utf-8")


def _fault(message: str, status: int = 500, code: str = "Client") -> web.Response:
    return _xml(build_fault(Fault(message, code)), status)


async def _body(request: web.Request) -> bytes | None:
    """The whole body, however it was chunked; None as soon as it passes MAX_BODY."""
    if (request.content_length or 0) > MAX_BODY:
        return None
    chunks, size = [], 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _cross_site(request: web.Request) -> bool:
    """A browser's request from another site: Fetch Metadata says so, or (an older browser)
    its `Origin` is not relay's own. The guard leaves SOAP to check this itself, as its
    refusal must be a Fault; the test is the guard's, so the two surfaces cannot drift."""
    if request.headers.get("Sec-Fetch-Site") in ("cross-site", "same-site"):
        return True
    origin = request.headers.get("Origin")
    return origin is not None and not own_origin(request, origin.lower())


class SoapPull:
    """The two routes, over this node's `PullService` (built here with its session table)."""

    def __init__(self, pull: Pull, current: Current) -> None:
        self._service = PullService(pull, current, SessionTable())
        self._current = current

    async def wsdl(self, request: web.Request) -> web.Response:
        """The WSDL, its service address set to this relay's public URL."""
        if "wsdl" not in request.query:
            raise JsonError(
                404, "the WSDL is at GET /soap/pull?wsdl; calls are POSTed to /soap/pull"
            )
        doc = copy.deepcopy(_WSDL)
        public_url = self._current.config.server.public_url
        for address in doc.iter(_SOAP_ADDRESS):
            address.set("location", f"{public_url}/soap/pull")
        return _xml(etree.tostring(doc, xml_declaration=True, encoding="UTF-8"))

    async def handle(self, request: web.Request) -> web.Response:
        if _cross_site(request):
            return _fault("cross-site requests are refused", 403)
        if request.content_type == "application/soap+xml":
            return _fault(
                "SOAP 1.2 is not accepted: this service speaks SOAP 1.1", 500, "VersionMismatch"
            )
        if request.content_type != "text/xml":
            return _fault("Content-Type must be text/xml (SOAP 1.1)", 415)
        body = await _body(request)
        if body is None:
            return _fault(f"request body larger than {MAX_BODY} bytes", 413)
        try:
            call = parse_call(body)
        except Fault as fault:
            return _xml(build_fault(fault), 500)
        try:
            answer = await self._service.handle(call)
        except StorageUnavailable:
            # Nothing is lost: a lease whose ack failed comes back when it runs out.
            response = _fault("storage unavailable: try again shortly", 503, "Server")
            response.headers["Retry-After"] = "1"
            return response
        return _xml(build_response(call.namespace, answer))

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/soap/pull", self.wsdl)
        app.router.add_post("/soap/pull", self.handle)
