"""The SOAP pull against hostile XML: every attack is a Fault, nothing is expanded or fetched,
the queue loses nothing, and the endpoint answers the next honest call as before."""

from __future__ import annotations

import pytest
from aiohttp import web
from lxml import etree

from ..helpers import free_port
from ..integration.test_soap import ENV, TOKEN, call, envelope, ingest, login, opens, soap_toml

# The billion laughs: ten levels of ten references each, 10^9 "lol"s if ever expanded.
LOL = '<!ENTITY lol0 "lol">' + "".join(
    f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10)
)
LOGIN = (
    "<SOAP-ENV:Envelope xmlns:SOAP-ENV='http://schemas.xmlsoap.org/soap/envelope/'"
    " xmlns:ns1='urn:relay-pull'><SOAP-ENV:Body><ns1:handleRequest>"
    "<contextId>{ctx}</contextId><className>bus_facade_context</className>"
    "<processName>login</processName></ns1:handleRequest></SOAP-ENV:Body></SOAP-ENV:Envelope>"
)


@pytest.fixture
async def relay(make_relay):
    relay = await make_relay(soap_toml(free_port()))
    await ingest(relay, opens(5))
    return relay


async def post(relay, body: bytes, content_type: str = "text/xml") -> tuple[int, str, str]:
    """(HTTP status, faultcode, faultstring) of an answer that must be a SOAP Fault."""
    async with relay.http.post(
        f"{relay.url}/soap/pull", data=body, headers={"Content-Type": content_type}
    ) as resp:
        status, text = resp.status, await resp.read()
    assert resp.content_type == "text/xml"
    fault = etree.fromstring(text).find(f"{{{ENV}}}Body/{{{ENV}}}Fault")
    assert fault is not None, text
    assert b"Traceback" not in text
    return status, fault.findtext("faultcode"), fault.findtext("faultstring")


async def still_serves(relay) -> None:
    """Nothing was lost and the next honest session works: all five events still pending."""
    stats = (await relay.store.stats()).destinations["feed"]
    assert (stats.pending, stats.leased, stats.delivered) == (5, 0, 0)
    assert (await login(relay))["result"] == "success"


async def test_billion_laughs_is_refused_without_expanding(relay):
    body = f'<?xml version="1.0"?><!DOCTYPE lolz [{LOL}]>' + LOGIN.format(ctx="&lol9;")
    status, code, message = await post(relay, body.encode())
    assert (status, code) == (500, "SOAP-ENV:Client")
    assert message == "DTDs and entity declarations are not accepted"
    await still_serves(relay)


async def test_external_entity_is_never_fetched(relay, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET")
    fetched: list[str] = []

    async def spy(request: web.Request) -> web.Response:
        fetched.append(request.path)
        return web.Response(text="PWNED")

    app = web.Application()
    app.router.add_get("/{tail:.*}", spy)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        for system in (f"file://{secret}", f"http://127.0.0.1:{port}/xxe"):
            body = (
                f'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "{system}">]>'
                + LOGIN.format(ctx="&x;")
            )
            status, code, message = await post(relay, body.encode())
            assert (status, code) == (500, "SOAP-ENV:Client")
            assert "TOP-SECRET" not in message and "PWNED" not in message
        # A parameter entity / external DTD subset: refused the same way.
        body = f'<?xml version="1.0"?><!DOCTYPE r SYSTEM "http://127.0.0.1:{port}/dtd">'
        status, code, _ = await post(relay, (body + LOGIN.format(ctx="x")).encode())
        assert (status, code) == (500, "SOAP-ENV:Client")
    finally:
        await runner.cleanup()
    assert fetched == []
    await still_serves(relay)


async def test_a_doctype_without_entities_is_refused_too(relay):
    body = '<?xml version="1.0"?><!DOCTYPE SOAP-ENV:Envelope>' + LOGIN.format(ctx="x")
    status, code, message = await post(relay, body.encode())
    assert (status, code, message) == (
        500, "SOAP-ENV:Client", "DTDs and entity declarations are not accepted"
    )  # fmt: skip


async def test_soap_12_envelope_is_a_version_mismatch(relay):
    body = LOGIN.format(ctx="x").replace(
        "http://schemas.xmlsoap.org/soap/envelope/", "http://www.w3.org/2003/05/soap-envelope"
    )
    status, code, message = await post(relay, body.encode())
    assert (status, code) == (500, "SOAP-ENV:VersionMismatch")
    assert "SOAP 1.1" in message
    status, code, _ = await post(relay, body.encode(), "application/soap+xml")
    assert (status, code) == (500, "SOAP-ENV:VersionMismatch")
    status, code, message = await post(relay, b"<Envelope><Body/></Envelope>")
    assert (status, code, message) == (500, "SOAP-ENV:VersionMismatch", "not a SOAP 1.1 Envelope")
    await still_serves(relay)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not xml at all",
        b"<SOAP-ENV:Envelope xmlns:SOAP-ENV='http://schemas.xmlsoap.org/soap/envelope/'>",
        LOGIN.format(ctx="x").replace("</ns1:handleRequest>", "").encode(),
        b"\xff\xfe<\x00x\x00",
    ],
    ids=["empty", "text", "unclosed", "mismatched", "bad-encoding"],
)
async def test_malformed_xml_is_a_client_fault(relay, body):
    status, code, message = await post(relay, body)
    assert (status, code) == (500, "SOAP-ENV:Client")
    assert message.startswith("malformed XML") or message == "not a SOAP 1.1 Envelope"
    await still_serves(relay)


async def test_wrong_shapes_are_client_faults(relay):
    wrong_op = LOGIN.format(ctx="x").replace("handleRequest", "dropTables")
    assert (await post(relay, wrong_op.encode()))[2] == "the Body must hold one handleRequest call"
    bad_map = envelope(None, "bus_facade_context", "login", None).replace(
        b'<entityData xsi:nil="true"/>', b"<entityData><item><value>v</value></item></entityData>"
    )
    status, code, message = await post(relay, bad_map)
    assert (status, code, message) == (
        500, "SOAP-ENV:Client", "a map holds item elements with a key and a value"
    )  # fmt: skip
    deep = "<item><key>k</key><value>" * 20 + "x" + "</value></item>" * 20
    nested = envelope(None, "bus_facade_context", "login", None).replace(
        b'<entityData xsi:nil="true"/>', f"<entityData>{deep}</entityData>".encode()
    )
    assert "nested deeper" in (await post(relay, nested))[2]
    await still_serves(relay)


async def test_oversized_and_wrong_type_bodies_are_refused(relay):
    big = envelope(
        None, "bus_facade_context", "login", {"userName": "feed", "password": "x" * 70_000}
    )
    status, code, message = await post(relay, big)
    assert (status, code, message) == (
        413,
        "SOAP-ENV:Client",
        "request body larger than 65536 bytes",
    )
    status, code, message = await post(
        relay, envelope(None, "bus_facade_context", "login"), "text/plain"
    )
    assert (status, message) == (415, "Content-Type must be text/xml (SOAP 1.1)")

    async def chunks(data: bytes, size: int):
        for i in range(0, len(data), size):
            yield data[i : i + size]

    # Chunked, with no Content-Length to check first: cut off once past the limit.
    async with relay.http.post(
        f"{relay.url}/soap/pull", data=chunks(big, 4096), headers={"Content-Type": "text/xml"}
    ) as resp:
        assert resp.status == 413
    # A valid call in many small chunks is read whole.
    call = envelope(None, "bus_facade_context", "login", {"userName": "feed", "password": TOKEN})
    async with relay.http.post(
        f"{relay.url}/soap/pull", data=chunks(call, 17), headers={"Content-Type": "text/xml"}
    ) as resp:
        assert resp.status == 200 and b"beanId" in await resp.read()
    await still_serves(relay)


async def test_values_are_escaped_in_answers(relay):
    """A hostile value echoed back (the class name in the error) stays text, not markup."""
    context = (await login(relay))["resultData"]["bus_entity_context"]["beanId"]
    status, answer = await call(relay, context, "</value><injected/>&amp;", "x")
    assert status == 200
    assert answer["resultData"] == "unknown className '</value><injected/>&amp;'"


async def test_a_browsers_cross_site_post_is_refused(relay):
    async with relay.http.post(
        f"{relay.url}/soap/pull",
        data=envelope(None, "bus_facade_context", "login", {"userName": "feed", "password": TOKEN}),
        headers={"Content-Type": "text/xml", "Sec-Fetch-Site": "cross-site"},
    ) as resp:
        assert resp.status == 403
        assert b"cross-site requests are refused" in await resp.read()


@pytest.mark.parametrize(
    "origin", ["http://evil.example", "null", "https://127.0.0.1.evil.example"]
)
async def test_a_foreign_origin_without_fetch_metadata_is_refused(relay, origin):
    """An older browser sends no Sec-Fetch-Site: only its Origin tells the post is foreign.
    The refusal is a Fault, the login never happens, and the queue is untouched."""
    async with relay.http.post(
        f"{relay.url}/soap/pull",
        data=envelope(None, "bus_facade_context", "login", {"userName": "feed", "password": TOKEN}),
        headers={"Content-Type": "text/xml", "Origin": origin},
    ) as resp:
        status, text = resp.status, await resp.read()
    assert (status, resp.content_type) == (403, "text/xml")
    fault = etree.fromstring(text).find(f"{{{ENV}}}Body/{{{ENV}}}Fault")
    assert fault is not None, text
    assert fault.findtext("faultcode") == "SOAP-ENV:Client"
    assert fault.findtext("faultstring") == "cross-site requests are refused"
    assert b"beanId" not in text
    await still_serves(relay)


async def test_relays_own_origin_is_served(relay):
    """A page relay itself serves may call the endpoint: its Origin is relay's own."""
    async with relay.http.post(
        f"{relay.url}/soap/pull",
        data=envelope(None, "bus_facade_context", "login", {"userName": "feed", "password": TOKEN}),
        headers={"Content-Type": "text/xml", "Origin": relay.url},
    ) as resp:
        assert resp.status == 200
        assert b"beanId" in await resp.read()
