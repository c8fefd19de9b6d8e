"""Pure360's dialect, pure parts: form fields, the pull's CSV, sessions, the codec,
and the migration guide kept true to them."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pytest

from relay.domain.pure360 import FIELDS, csv_batch, form_body, form_pairs
from relay.soap import sessions
from relay.soap.codec import Fault, build_response, parse_call
from relay.soap.sessions import SessionTable

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "how-to" / "migrate-from-pure360.md"


def test_values_are_written_as_the_platform_writes_them():
    event = {"event_type": "engine_open", "email": "a@x.com", "event_time": 1700000000.9,
             "is_bot": False, "first": True, "bot_reason": None, "score": 1.5}  # fmt: skip
    assert form_pairs(event) == [
        ("type", "OPEN"), ("Event_date", "1700000000"), ("email", "a@x.com"), ("mobile", ""),
        ("messageName", ""), ("deliveryDate", ""), ("Delivery_ID", ""),
        ("is_bot", "false"), ("first", "true"), ("bot_reason", ""), ("score", "1.5"),
    ]  # fmt: skip


def test_lists_repeat_their_key_and_names_keep_brackets_literal():
    body = form_body({"event_type": "optin", "email": "a@x.com", "listid": "a b, c&d"})
    assert "&List_Names[]=a+b&List_Names[]=c%26d" in body


def test_csv_batch_headers_per_trigger_and_rows_in_order():
    events = [
        {"id": "1", "event_type": "engine_click", "email": "a@x.com", "click_url": "u,1", "k": "v"},
        {"id": "2", "event_type": "optin", "email": "b@x.com", "listid": "l1,l2"},
        {"id": "3", "event_type": "engine_click", "email": "c@x.com", "click_url": "u2", "z": '"q"'},
    ]  # fmt: skip
    meta, data = csv_batch(events)
    assert meta == {
        "CLICK": "type,Event_date,email,mobile,messageName,deliveryDate,Delivery_ID,URL,id,k,z",
        "OPTIN": "type,Event_date,email,mobile,messageName,deliveryDate,Delivery_ID,List_Names,id",
    }
    rows = list(csv.reader(io.StringIO(data.decode())))
    assert rows == [
        ["CLICK", "", "a@x.com", "", "", "", "", "u,1", "1", "v", ""],
        ["OPTIN", "", "b@x.com", "", "", "", "", "l1|l2", "2"],
        ["CLICK", "", "c@x.com", "", "", "", "", "u2", "3", "", '"q"'],
    ]
    assert csv_batch([]) == ({}, b"")


def test_sessions_idle_out_and_are_bounded(monkeypatch):
    now = [100.0]
    table = SessionTable(clock=lambda: now[0])
    ctx = table.open("feed", idle_s=10)
    assert ctx is not None and ctx.startswith("C-")
    now[0] = 109.0
    assert table.use(ctx).destination == "feed"  # used: its idle clock restarts
    now[0] = 118.0
    assert table.use(ctx) is not None
    now[0] = 128.5
    assert table.use(ctx) is None and len(table) == 0
    assert table.use("C-made-up") is None

    monkeypatch.setattr(sessions, "MAX_SESSIONS", 2)
    first, second = table.open("a", 10), table.open("b", 10)
    assert table.open("c", 10) is None  # full of live sessions: refused
    now[0] += 11
    assert table.open("c", 10) is not None  # the idle ones were swept
    assert table.use(first) is None and table.use(second) is None


PHP_CALL = b"""<?xml version="1.0" encoding="UTF-8"?>
<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/"
 xmlns:ns1="urn:relay-pull" xmlns:xsd="http://www.w3.org/2001/XMLSchema"
 xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:ns2="http://xml.apache.org/xml-soap"
 xmlns:SOAP-ENC="http://schemas.xmlsoap.org/soap/encoding/"
 SOAP-ENV:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><SOAP-ENV:Body>
<ns1:handleRequest><contextId xsi:type="xsd:string">C-1</contextId>
<className xsi:type="xsd:string">bus_facade_eventNotification</className>
<processName xsi:type="xsd:string">getBatch</processName>
<entityData xsi:type="ns2:Map"><item><key xsi:type="xsd:string">notificationTypes</key>
<value SOAP-ENC:arrayType="xsd:string[2]" xsi:type="SOAP-ENC:Array">
<item xsi:type="xsd:string">OPEN</item><item xsi:type="xsd:string">CLICK</item></value></item>
<item><key xsi:type="xsd:string">maxNotifications</key><value xsi:type="xsd:int">1000</value></item>
</entityData><processData xsi:nil="true"/></ns1:handleRequest></SOAP-ENV:Body></SOAP-ENV:Envelope>"""


def test_a_call_as_php_encodes_it_decodes_arrays_and_maps():
    call = parse_call(PHP_CALL)
    assert (call.context_id, call.class_name, call.process_name) == (
        "C-1", "bus_facade_eventNotification", "getBatch"
    )  # fmt: skip
    assert call.entity_data == {"notificationTypes": ["OPEN", "CLICK"], "maxNotifications": "1000"}
    assert call.process_data == {} and call.namespace == "urn:relay-pull"


def test_the_hardened_parser_itself_expands_nothing():
    """Behind the DOCTYPE refusal: the parser alone resolves no entity and loads no DTD."""
    from lxml import etree

    from relay.soap.codec import _PARSER

    bomb = b'<!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;">]><r>&b;</r>'
    root = etree.fromstring(bomb, _PARSER)
    assert "aaaa" not in etree.tostring(root).decode()
    with pytest.raises(Fault, match="DTDs and entity declarations are not accepted"):
        parse_call(bomb)


def test_answers_are_apache_maps_with_typed_values():
    xml = build_response(
        "urn:x", {"result": "success", "resultData": {"n": 3, "s": "<&>", "l": None}}
    )
    text = xml.decode()
    assert '<return xsi:type="ns2:Map">' in text
    assert '<value xsi:type="xsd:int">3</value>' in text
    assert '<value xsi:type="xsd:string">&lt;&amp;&gt;</value>' in text
    assert '<value xsi:nil="true"/>' in text
    assert 'xmlns:ns2="http://xml.apache.org/xml-soap"' in text


def test_the_guides_field_table_is_the_code():
    rows = re.findall(r"^\| ([A-Z]+) \| `(\w+)` \| (`.*) \|$", GUIDE.read_text(), re.M)
    documented = {trigger: re.findall(r"`([^`]+)` [←=]", cells) for trigger, _, cells in rows}
    assert documented == {t: [name for name, _ in fields] for t, fields in FIELDS.items()}


def test_the_guides_php_example_is_the_script_the_tests_run():
    guide = GUIDE.read_text()
    block = guide.split("```php\n", 1)[1].split("```", 1)[0]
    assert block == (ROOT / "tests" / "php" / "pull.php").read_text()

