"""The SOAP pull in Pure360's dialect, on a real socket, driven by PHP's SoapClient.

PHP (Debian's php-cli + php-soap; `.ci/run` installs them) builds its client from relay's
WSDL and runs the vendor's documented session: login, getBatch, logout. The scripts are in
tests/php/ and are the ones the migration guide shows.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import io
import shutil
import subprocess
from pathlib import Path

import orjson
import pytest
from lxml import etree

from relay.domain.pure360 import SEED_TRIGGERS

from ..helpers import base_toml, free_port, wait_for

PHP_DIR = Path(__file__).parent.parent / "php"
TOKEN = "feed-secret"
ENV = "http://schemas.xmlsoap.org/soap/envelope/"


def soap_toml(port: int, lease: str = "5m", idle: str = "20m") -> str:
    return (
        base_toml(listen=f"127.0.0.1:{port}")
        + f'[destinations.feed]\ntype = "pull"\ntokens = ["{TOKEN}"]\nlease = "{lease}"\n'
        + f'session_idle = "{idle}"\n'
        + '[destinations.hook]\ntype = "http"\nurl = "http://127.0.0.1:9/hook"\n'
        + '[[routes]]\nevents = ["*"]\ndestinations = ["feed"]\n'
    )


def php() -> str:
    path = shutil.which("php")
    if path is None:
        pytest.fail("php-cli is required (Debian: apt-get install php-cli php-soap; .ci/run does)")
    return path


async def run_php(script: str, *args: str, timeout: float = 50) -> subprocess.CompletedProcess:
    proc = await asyncio.create_subprocess_exec(
        php(),
        str(PHP_DIR / script),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    result = subprocess.CompletedProcess([script, *args], proc.returncode or 0, out, err)
    assert result.returncode == 0, err.decode()
    return result


def opens(n: int, prefix: str = "o") -> list[dict]:
    return [
        {
            "id": f"{prefix}{i}",
            "event_type": "engine_open",
            "email": f"u{i}@example.com",
            "sendid": "s1",
            "event_time": 1_700_000_000 + i,
        }
        for i in range(n)
    ]


@pytest.fixture
async def relay(make_relay):
    return await make_relay(soap_toml(free_port()))


async def ingest(relay, events: list[dict]) -> None:
    for i in range(0, len(events), 5000):
        resp = await relay.post_events(events[i : i + 5000])
        assert resp.status == 202


# -- a raw client: the envelopes the vendor documents, for what PHP cannot be made to send --


def envelope(context_id, class_name, process, entity=None, process_data=None) -> bytes:
    """A handleRequest call as the vendor's own XML examples write it."""
    xsi = "http://www.w3.org/2001/XMLSchema-instance"
    root = etree.Element(
        f"{{{ENV}}}Envelope",
        nsmap={"SOAP-ENV": ENV, "ns1": "urn:localhost-paint", "xsi": xsi,
               "xsd": "http://www.w3.org/2001/XMLSchema", "ns2": "http://xml.apache.org/xml-soap"},
    )  # fmt: skip
    call = etree.SubElement(
        etree.SubElement(root, f"{{{ENV}}}Body"), "{urn:localhost-paint}handleRequest"
    )

    def put(parent, tag, value):
        el = etree.SubElement(parent, tag)
        if value is None:
            el.set(f"{{{xsi}}}nil", "true")
        elif isinstance(value, dict):
            el.set(f"{{{xsi}}}type", "ns2:Map")
            for k, v in value.items():
                item = etree.SubElement(el, "item")
                put(item, "key", k)
                put(item, "value", v)
        else:
            el.set(f"{{{xsi}}}type", "xsd:string")
            el.text = str(value)

    for tag, value in (("contextId", context_id), ("className", class_name),
                       ("processName", process), ("entityData", entity),
                       ("processData", process_data)):  # fmt: skip
        put(call, tag, value)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def decode(el):
    """An answer's value: maps to dicts, text otherwise."""
    if len(el):
        return {item.findtext("key"): decode(item.find("value")) for item in el}
    return el.text or ""


async def call(relay, *args) -> tuple[int, dict]:
    async with relay.http.post(
        f"{relay.url}/soap/pull", data=envelope(*args), headers={"Content-Type": "text/xml"}
    ) as resp:
        root = etree.fromstring(await resp.read())
    answer = root.find(f"{{{ENV}}}Body")[0]
    assert etree.QName(answer).localname == "handleRequestResponse"
    assert etree.QName(answer).namespace == "urn:localhost-paint"  # answered in the caller's
    return resp.status, decode(answer.find("return"))


async def login(relay, password: str = TOKEN, user: str = "feed") -> dict:
    _, answer = await call(relay, None, "bus_facade_context", "login",
                           {"userName": user, "password": password})  # fmt: skip
    return answer


# -- PHP's SoapClient ----------------------------------------------------------------------


async def test_php_pulls_10000_events_marked_read_and_the_queue_is_empty_after(relay):
    await ingest(relay, opens(10_000))
    wsdl = f"{relay.url}/soap/pull?wsdl"
    result = await run_php("pull.php", wsdl, "feed", TOKEN)
    rows = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 10_000
    assert {r["id"] for r in rows} == {f"o{i}" for i in range(10_000)}
    first = next(r for r in rows if r["id"] == "o7")
    assert first["type"] == "OPEN"
    assert first["email"] == "u7@example.com"
    assert first["Event_date"] == "1700000007"
    assert first["Delivery_ID"] == "s1"
    assert b"pulled 10000 events" in result.stderr
    # Marked read as it was read: nothing pending or leased, every one delivered.
    stats = (await relay.store.stats()).destinations["feed"]
    assert (stats.pending, stats.leased, stats.delivered) == (0, 0, 10_000)
    # The same outcome recording as the JSON pull: a leased and an acked line per batch.
    outcomes = [(line["outcome"], line["count"]) for line in relay.dispatch_lines()]
    assert outcomes == [("leased", 10_000), ("acked", 10_000)]


async def test_php_lease_mark_read_and_a_lease_that_comes_back(make_relay):
    relay = await make_relay(soap_toml(free_port(), lease="1s"))
    await ingest(relay, opens(3) + [
        {"id": "c1", "event_type": "engine_click", "email": "c@example.com",
         "click_url": "https://example.com/a?b=1,2"},
        {"id": "b1", "event_type": "bounce", "email": "b@example.com"},
    ])  # fmt: skip
    wsdl = f"{relay.url}/soap/pull?wsdl"
    leased = orjson.loads((await run_php("lease.php", wsdl, "feed", TOKEN, "lease", "2")).stdout)
    assert leased["batchId"]
    assert [row[0] for row in leased["rows"]] == ["OPEN", "OPEN"]

    # Not marked read: after the lease runs out the same two come back, with a new batchId.
    await asyncio.sleep(1.1)
    again = orjson.loads((await run_php("lease.php", wsdl, "feed", TOKEN, "lease", "10")).stdout)
    assert again["batchId"] != leased["batchId"]
    kinds = sorted(row[0] for row in again["rows"])
    assert kinds == ["CLICK", "OPEN", "OPEN", "OPEN"]  # OPEN and CLICK only: the bounce waits
    click = next(row for row in again["rows"] if row[0] == "CLICK")
    assert "https://example.com/a?b=1,2" in click  # a comma inside a CSV cell survives

    read = orjson.loads(
        (await run_php("lease.php", wsdl, "feed", TOKEN, "markRead", again["batchId"])).stdout
    )
    assert read["result"] == "success"
    assert read["resultData"]["bus_entity_eventNotificationBatch"]["eventCount"] == 4
    # Marked read twice: the dialect's error answer, not a Fault.
    twice = orjson.loads(
        (await run_php("lease.php", wsdl, "feed", TOKEN, "markRead", again["batchId"])).stdout
    )
    assert twice["result"] == "error" and "already read" in twice["resultData"]
    stats = (await relay.store.stats()).destinations["feed"]
    assert (stats.pending, stats.leased, stats.delivered) == (1, 0, 4)  # the bounce is left


# -- the session and errors in the dialect's terms -----------------------------------------


async def test_login_logout_and_errors_are_answers_not_faults(relay):
    assert await login(relay, password="wrong") == {
        "result": "error", "resultData": "invalid userName or password"
    }  # fmt: skip
    assert (await login(relay, user="hook"))["result"] == "error"  # not a pull destination
    answer = await login(relay)
    assert answer["result"] == "success"
    context = answer["resultData"]["bus_entity_context"]["beanId"]
    assert context.startswith("C-")

    status, unknown = await call(relay, context, "bus_facade_list", "search")
    assert status == 200
    assert unknown == {"result": "error", "resultData": "unknown className 'bus_facade_list'"}
    _, unknown = await call(relay, context, "bus_facade_eventNotification", "purge")
    assert unknown["result"] == "error" and "unknown processName 'purge'" in unknown["resultData"]
    _, bad = await call(relay, context, "bus_facade_eventNotification", "getBatch", None,
                        {"maxNotifications": "10001"})  # fmt: skip
    assert bad == {"result": "error",
                   "resultData": "maxNotifications: must be an integer from 1 to 10000"}  # fmt: skip
    _, bad = await call(relay, context, "bus_facade_eventNotification", "getBatch", None,
                        {"notificationTypes": "OPEN,PURCHASE"})  # fmt: skip
    assert bad["resultData"] == "notificationTypes: unknown trigger 'PURCHASE'"

    _, out = await call(relay, context, "bus_facade_context", "logout")
    assert out["result"] == "success"
    _, after = await call(relay, context, "bus_facade_eventNotification", "getBatch")
    assert after == {"result": "error", "resultData": "invalid or expired contextId: log in again"}


async def test_a_context_expires_after_its_idle_timeout(make_relay):
    relay = await make_relay(soap_toml(free_port(), idle="1s"))
    context = (await login(relay))["resultData"]["bus_entity_context"]["beanId"]
    _, ok = await call(relay, context, "bus_facade_eventNotification", "getBatch")
    assert ok["result"] == "success"

    async def expired() -> bool:
        _, answer = await call(relay, context, "bus_facade_eventNotification", "getBatch")
        return answer["result"] == "error"

    await asyncio.sleep(1.05)
    await wait_for(expired, timeout=5, what="the idle context to expire")


async def test_get_batch_reads_entity_or_process_data_and_fills_meta(relay):
    await ingest(relay, opens(2) + [
        {"id": "x1", "event_type": "sms_failed", "phone": "447700900001", "reason": "absent"},
    ])  # fmt: skip
    context = (await login(relay))["resultData"]["bus_entity_context"]["beanId"]
    _, answer = await call(relay, context, "bus_facade_eventNotification", "getBatch",
                           {"notificationTypes": "SMSFAILED", "markAsReadInd": "Y"})  # fmt: skip
    batch = answer["resultData"]["bus_entity_eventNotificationBatch"]
    assert batch["eventCount"] == "1" and batch["markAsReadInd"] == "Y"
    assert batch["eventMeta"] == {
        "SMSFAILED": "type,Event_date,mobile,messageName,deliveryDate,Delivery_ID,id,reason"
    }
    header = next(csv.reader([batch["eventMeta"]["SMSFAILED"]]))
    row = next(csv.reader(io.StringIO(base64.b64decode(batch["eventData"]).decode())))
    event = dict(zip(header, row, strict=True))
    assert event["type"] == "SMSFAILED" and event["mobile"] == "447700900001"
    assert event["reason"] == "absent" and event["id"] == "x1"

    _, rest = await call(relay, context, "bus_facade_eventNotification", "getBatch", None,
                         {"markAsReadInd": "Y", "maxNotifications": "10"})  # fmt: skip
    batch = rest["resultData"]["bus_entity_eventNotificationBatch"]
    assert batch["eventCount"] == "2" and set(batch["eventMeta"]) == {"OPEN"}


async def test_wsdl_names_this_relays_address(relay):
    async with relay.http.get(f"{relay.url}/soap/pull?wsdl") as resp:
        assert resp.status == 200 and resp.content_type == "text/xml"
        doc = etree.fromstring(await resp.read())
    address = doc.find(".//{http://schemas.xmlsoap.org/wsdl/soap/}address")
    assert address.get("location") == f"{relay.url}/soap/pull"


def test_every_seed_trigger_is_a_relay_trigger():
    from relay.domain.events import TRIGGERS

    assert set(SEED_TRIGGERS) <= set(TRIGGERS)


async def test_a_soap_pull_shows_on_the_console_api_show_and_metrics_like_a_json_pull(relay):
    await ingest(relay, opens(3))
    context = (await login(relay))["resultData"]["bus_entity_context"]["beanId"]
    _, answer = await call(relay, context, "bus_facade_eventNotification", "getBatch", None,
                           {"markAsReadInd": "Y"})  # fmt: skip
    assert answer["resultData"]["bus_entity_eventNotificationBatch"]["eventCount"] == "3"

    async with relay.http.get(f"{relay.url}/v1/admin/destinations") as resp:
        [feed] = [d for d in (await resp.json())["destinations"] if d["name"] == "feed"]
    assert (feed["pending"], feed["leased"], feed["delivered"]) == (0, 0, 3)
    assert feed["detail"]["last_pull"].endswith("Z") and feed["last_success"].endswith("Z")
    assert feed["series"]["delivered"][-1] == 3
    async with relay.http.get(f"{relay.url}/v1/admin/events/o1") as resp:  # = relay show o1
        [delivery] = (await resp.json())["destinations"]
    assert (delivery["name"], delivery["state"]) == ("feed", "delivered")
    async with relay.http.get(f"{relay.url}/metrics") as resp:
        metrics = await resp.text()
    assert 'relay_deliveries_total{destination="feed",outcome="delivered"} 3.0' in metrics
    assert 'relay_http_requests_total{route="/soap/pull",status="200"}' in metrics


async def test_storage_down_is_a_server_fault_and_loses_nothing(make_relay, cluster, tmp_path):
    """PostgreSQL stopped for real: getBatch answers a Fault with 503, and once the database
    is back the same events are all there to pull."""
    from .. import pg

    toml = (
        '[server]\nlisten = "127.0.0.1:0"\n'
        f'[storage]\nbackend = "postgres"\ndsn = "{pg.fresh_schema_dsn(cluster.dsn)}"\n'
        f'path = "{tmp_path}/node.db"\npool_size = 2\n'
        f'[destinations.feed]\ntype = "pull"\ntokens = ["{TOKEN}"]\n'
        '[[routes]]\nevents = ["*"]\ndestinations = ["feed"]\n'
    )
    relay = await make_relay(toml)
    await ingest(relay, opens(4))
    context = (await login(relay))["resultData"]["bus_entity_context"]["beanId"]
    get_batch = envelope(context, "bus_facade_eventNotification", "getBatch", None,
                         {"markAsReadInd": "Y"})  # fmt: skip
    cluster.stop()
    try:
        async with relay.http.post(
            f"{relay.url}/soap/pull", data=get_batch, headers={"Content-Type": "text/xml"}
        ) as resp:
            body = await resp.read()
            assert resp.status == 503 and resp.headers["Retry-After"] == "1"
        fault = etree.fromstring(body).find(f"{{{ENV}}}Body/{{{ENV}}}Fault")
        assert fault.findtext("faultcode") == "SOAP-ENV:Server"
        assert fault.findtext("faultstring") == "storage unavailable: try again shortly"
    finally:
        cluster.start()

    lease = envelope(context, "bus_facade_eventNotification", "getBatch", None,
                     {"markAsReadInd": "N"})  # fmt: skip

    async def pulled_all() -> bool:
        async with relay.http.post(
            f"{relay.url}/soap/pull", data=lease, headers={"Content-Type": "text/xml"}
        ) as resp:
            if resp.status != 200:  # the pool may still be reconnecting: a Fault again
                return False
            answer = decode(etree.fromstring(await resp.read()).find(".//return"))
        return answer["resultData"]["bus_entity_eventNotificationBatch"]["eventCount"] == "4"

    await wait_for(pulled_all, 30, "the four events back once PostgreSQL answers")
