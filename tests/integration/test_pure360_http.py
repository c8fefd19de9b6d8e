"""format = "pure360": each trigger's form, field by field, as a PHP receiver reads `$_POST`.

relay posts to a real aiohttp receiver; PHP's own `parse_str` (the parser behind `$_POST`)
decodes every body, so `List_Names[]` arrives as an array exactly as PHP integrations of the
Pure360 expect it. The same lines go into ftp/sftp logs with `format = "pure360"`.
"""

from __future__ import annotations

import asyncio
import shutil

import orjson
import pytest

from relay.destinations.logfile import render
from relay.models import Claimed

from ..helpers import base_toml, wait_for

# One event of every trigger, with the fields the form takes from it and some custom fields.
EVENTS = [
    {"id": "ds", "event_type": "delivery_start", "sendid": "989565", "profile": "TestProfile",
     "message_name": "AUG-2014-Deals", "listid": "web signup,fb signup",
     "scheduled_date": 1437581341, "event_time": 1437581400},
    {"id": "dl", "event_type": "delivery", "sendid": "989565", "profile": "TestProfile",
     "message_name": "AUG-2014-Deals", "listid": "web signup", "subject": "Summer Parties",
     "user": "testuser", "scheduled_date": 1437581341, "start_date": 1437581400,
     "sent": 256545, "event_time": 1437581500},
    {"id": "op", "event_type": "engine_open", "email": "test@test.com", "phone": "44789856545",
     "message_name": "Aug-2014-Deals", "delivery_date": 1437581341, "sendid": "9895654",
     "event_time": 1437590000.75, "firstName": "Ann", "lastName": "O'Neil & Co"},
    {"id": "ck", "event_type": "engine_click", "email": "test@test.com", "sendid": "9895654",
     "click_url": "https://example.com/p?a=1&b=ü", "event_time": 1437590001},
    {"id": "bo", "event_type": "bounce", "email": "gone@test.com", "sendid": "9895654",
     "event_time": 1437590002, "message": "550 no such user"},
    {"id": "sb", "event_type": "soft_bounce", "email": "full@test.com", "sendid": "9895654",
     "event_time": 1437590003},
    {"id": "bl", "event_type": "blocked", "email": "blocked@test.com", "sendid": "9895654",
     "event_time": 1437590004},
    {"id": "oi", "event_type": "optin", "email": "new@test.com", "listid": "web signup",
     "event_time": 1437590005},
    {"id": "oo", "event_type": "engine_unsub", "email": "bye@test.com", "listid": "t99",
     "sendid": "9895654", "event_time": 1437590006},
    {"id": "so", "event_type": "sms_optout", "phone": "447700900001", "event_time": 1437590007},
    {"id": "sf", "event_type": "sms_failed", "phone": "447700900002", "sendid": "77",
     "event_time": 1437590008},
    {"id": "da", "event_type": "delivery_attempt", "email": "a@test.com", "status": "success",
     "event_time": 1437590009, "headers": {"X-Customer-Ref": "A-1001"}},
    {"id": "sc", "event_type": "scomp", "email": "angry@test.com", "event_time": 1437590010},
]  # fmt: skip

RECIPIENT = ["Event_date", "email", "mobile", "messageName", "deliveryDate", "Delivery_ID"]
# What the PHP receiver finds in $_POST for each, in order (PHP turns "." in names into "_").
EXPECTED = {
    "DELIVERYSTART": {
        "type": "DELIVERYSTART", "profile": "TestProfile", "message_Type": "EMAIL",
        "MessageName": "AUG-2014-Deals", "Delivery_ID": "989565",
        "List_Names": ["web signup", "fb signup"], "Delivery_Scheduled_Date": "1437581341",
        "Delivery_Start_Date": "1437581400", "Delivery_Complete_Date": "", "id": "ds",
    },
    "DELIVERY": {
        "type": "DELIVERY", "notificationSubject": "Summer Parties", "user": "testuser",
        "Profile": "TestProfile", "Message_Type": "EMAIL", "Message_Name": "AUG-2014-Deals",
        "Delivery_ID": "989565", "List_Names": ["web signup"],
        "Delivery_Scheduled_Date": "1437581341", "Delivery_Start_Date": "1437581400",
        "Delivery_Complete_Date": "1437581500", "Emails_Sent_/_Credits_Used": "256545",
        "id": "dl",
    },
    "OPEN": {
        "type": "OPEN", "Event_date": "1437590000", "email": "test@test.com",
        "mobile": "44789856545", "messageName": "Aug-2014-Deals", "deliveryDate": "1437581341",
        "Delivery_ID": "9895654", "id": "op", "firstName": "Ann", "lastName": "O'Neil & Co",
    },
    "CLICK": {
        "type": "CLICK", "Event_date": "1437590001", "email": "test@test.com", "mobile": "",
        "messageName": "", "deliveryDate": "", "Delivery_ID": "9895654",
        "URL": "https://example.com/p?a=1&b=ü", "id": "ck",
    },
    "BOUNCE": {
        "type": "BOUNCE", "Event_date": "1437590002", "email": "gone@test.com", "mobile": "",
        "messageName": "", "deliveryDate": "", "Delivery_ID": "9895654", "id": "bo",
        "message": "550 no such user",
    },
    "SOFTBOUNCE": {
        "type": "SOFTBOUNCE", "Event_date": "1437590003", "email": "full@test.com",
        "mobile": "", "messageName": "", "deliveryDate": "", "Delivery_ID": "9895654",
        "id": "sb",
    },
    "BLOCKED": {
        "type": "BLOCKED", "Event_date": "1437590004", "email": "blocked@test.com",
        "mobile": "", "messageName": "", "deliveryDate": "", "Delivery_ID": "9895654",
        "id": "bl",
    },
    "OPTIN": {
        "type": "OPTIN", "Event_date": "1437590005", "email": "new@test.com", "mobile": "",
        "messageName": "", "deliveryDate": "", "Delivery_ID": "", "List_Names": ["web signup"],
        "id": "oi",
    },
    "OPTOUT": {
        "type": "OPTOUT", "Event_date": "1437590006", "email": "bye@test.com", "mobile": "",
        "messageName": "", "deliveryDate": "", "Delivery_ID": "9895654", "List_Names": ["t99"],
        "id": "oo",
    },
    "SMSOPTOUT": {
        "type": "SMSOPTOUT", "Event_date": "1437590007", "mobile": "447700900001",
        "messageName": "", "deliveryDate": "", "Delivery_ID": "", "id": "so",
    },
    "SMSFAILED": {
        "type": "SMSFAILED", "Event_date": "1437590008", "mobile": "447700900002",
        "messageName": "", "deliveryDate": "", "Delivery_ID": "77", "id": "sf",
    },
    "DELIVERYATTEMPT": {
        "type": "DELIVERYATTEMPT", "Event_date": "1437590009", "email": "a@test.com",
        "mobile": "", "messageName": "", "deliveryDate": "", "Delivery_ID": "",
        "status": "success", "id": "da", "headers_X-Customer-Ref": "A-1001",
    },
    "SPAMCOMPLAINT": {
        "type": "SPAMCOMPLAINT", "Event_date": "1437590010", "email": "angry@test.com",
        "mobile": "", "messageName": "", "deliveryDate": "", "Delivery_ID": "", "id": "sc",
    },
}  # fmt: skip

PARSE_STR = (
    "foreach (json_decode(stream_get_contents(STDIN)) as $body)"
    ' { parse_str($body, $post); echo json_encode($post), "\\n"; }'
)


async def php_post_arrays(bodies: list[str]) -> list[dict]:
    """Each body as PHP's parse_str (what fills `$_POST`) reads it, key order kept."""
    php = shutil.which("php")
    if php is None:
        pytest.fail("php-cli is required (Debian: apt-get install php-cli; .ci/run does)")
    proc = await asyncio.create_subprocess_exec(
        php, "-r", PARSE_STR, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(proc.communicate(orjson.dumps(bodies)), 30)
    assert proc.returncode == 0
    return [orjson.loads(line) for line in out.splitlines()]


async def test_every_trigger_posts_the_platforms_form_field_by_field(make_relay, receiver):
    toml = base_toml() + (
        f'[destinations.legacy]\ntype = "http"\nurl = "{receiver.url}"\nformat = "pure360"\n'
        '[[routes]]\nevents = ["*"]\ndestinations = ["legacy"]\n'
    )
    relay = await make_relay(toml)
    assert (await relay.post_events(EVENTS)).status == 202
    await wait_for(lambda: len(receiver.hits) >= len(EVENTS), what="every event posted")

    for hit in receiver.hits:
        assert hit.method == "POST"
        assert hit.headers["Content-Type"] == "application/x-www-form-urlencoded"
        assert hit.headers["webhook-id"]  # relay's id header rides along for deduplication
    posts = await php_post_arrays([hit.body.decode() for hit in receiver.hits])
    by_type = {post["type"]: post for post in posts}
    assert set(by_type) == set(EXPECTED)
    for trigger, expected in EXPECTED.items():
        got = by_type[trigger]
        assert got == expected, trigger
        assert list(got) == list(expected), f"{trigger}: field order"


def test_ftp_log_lines_are_the_same_post_data_one_per_line():
    claims = [
        Claimed(i, 1, e["id"], e["event_type"], orjson.dumps(e), 1, 0.0)
        for i, e in enumerate(EVENTS[2:5])
    ]
    lines = render("pure360", claims).decode().splitlines()
    assert [line.split("&")[0] for line in lines] == ["type=OPEN", "type=CLICK", "type=BOUNCE"]
    assert lines[1] == (
        "type=CLICK&Event_date=1437590001&email=test%40test.com&mobile=&messageName="
        "&deliveryDate=&Delivery_ID=9895654&URL=https%3A//example.com/p%3Fa%3D1%26b%3D%C3%BC"
        "&id=ck"
    )
