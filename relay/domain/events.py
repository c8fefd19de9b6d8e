"""The event vocabulary: types, triggers, required fields, validation and ids.

Validation is the hot path of ingestion, so it is plain dict and set work with no schema
library; each problem becomes one `Problem(index, field, message)` for the 400 answer.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass
from typing import Any

# event_type -> (trigger, required fields)
VOCABULARY: dict[str, tuple[str, tuple[str, ...]]] = {
    "delivery_start": ("DELIVERYSTART", ("sendid",)),
    "delivery": ("DELIVERY", ("sendid",)),
    "delivery_attempt": ("DELIVERYATTEMPT", ("email", "status")),
    "engine_open": ("OPEN", ("email",)),
    "engine_click": ("CLICK", ("email", "click_url")),
    "bounce": ("BOUNCE", ("email",)),
    "soft_bounce": ("SOFTBOUNCE", ("email",)),
    "blocked": ("BLOCKED", ("email",)),
    "optin": ("OPTIN", ("email", "listid")),
    "engine_unsub": ("OPTOUT", ("email",)),
    "scomp": ("SPAMCOMPLAINT", ("email",)),
    "sms_optout": ("SMSOPTOUT", ("phone",)),
    "sms_failed": ("SMSFAILED", ("phone",)),
}
EVENT_TYPES = frozenset(VOCABULARY)
TRIGGERS = {trigger: etype for etype, (trigger, _) in VOCABULARY.items()}
# Only these carry the message's custom `headers` on to destinations.
HEADER_EVENTS = frozenset({"delivery_attempt", "delivery"})
ATTEMPT_STATUSES = frozenset({"success", "failure", "failure_toolong", "deferral", "connmaxout"})

# The fields relay knows have one JSON type each: a number is not an email, an integer is
# not a string. Other fields may be any scalar and are passed on as given.
_STRING, _NUMBER, _BOOLEAN = "a string", "a number", "true or false"
FIELD_TYPES: dict[str, str] = {
    **dict.fromkeys(
        (
            "email", "listid", "sendid", "mail_class", "click_tracking_id", "status",
            "message", "outmtaid_ip", "from_address", "engine_ip", "user_agent",
            "click_url", "phone", "bot_reason",
        ),
        _STRING,
    ),
    "timestamp": _NUMBER,
    "injected_time": _NUMBER,
    "is_bot": _BOOLEAN,
    "first": _BOOLEAN,
}  # fmt: skip


def _has_type(value: object, kind: str) -> bool:
    if kind is _STRING:
        return isinstance(value, str)
    if kind is _BOOLEAN:
        return isinstance(value, bool)
    return isinstance(value, int | float) and not isinstance(value, bool)


# Documented limits (docs/reference/events.md, "Limits").
MAX_ID = 128
MAX_FIELDS = 100
MAX_KEY = 64
MAX_STRING = 8192
MAX_HEADERS = 50
# Beyond ±(2**53 - 1) a JSON number is rounded by JavaScript and most JSON readers (and
# orjson reads an integer past 64 bits as a float): such numbers must come as strings.
MAX_SAFE_INT = 2**53 - 1


def event_type_for(name: str) -> str | None:
    """An event_type from an event_type or trigger name, case-insensitively; None if unknown."""
    lowered = name.lower()
    if lowered in VOCABULARY:
        return lowered
    return TRIGGERS.get(name.upper())


@dataclass(frozen=True, slots=True)
class Problem:
    index: int
    field: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "field": self.field, "message": self.message}


class IdMaker:
    """Time-sortable unique ids: 48-bit milliseconds then a 64-bit counter, in hex (28 chars).

    Like a monotonic ULID: within one millisecond the counter increments, so ids made by one
    process sort in the order they were made; it restarts at a random point each
    millisecond so two processes do not collide. Hex because `bytes.hex` is one C
    call (base32 in Python was a quarter of the ingest hot path). Event-loop thread only.
    """

    def __init__(self) -> None:
        self._random = random.Random(os.urandom(16))
        self._last_ms = 0
        self._counter = 0

    def __call__(self) -> str:
        ms = time.time_ns() // 1_000_000
        if ms > self._last_ms:
            self._last_ms = ms
            self._counter = self._random.getrandbits(62)  # room to count up within 64 bits
        else:
            self._counter += 1
        return ((self._last_ms << 64) | self._counter).to_bytes(14, "big").hex()


new_id = IdMaker()


def _check_scalar(index: int, key: str, value: object, problems: list[Problem]) -> None:
    if isinstance(value, str):
        if len(value) > MAX_STRING:
            problems.append(Problem(index, key, f"longer than {MAX_STRING} characters"))
    elif value is None or value is True or value is False:
        pass
    elif not isinstance(value, int | float):
        problems.append(Problem(index, key, "must be a string, number, boolean or null"))
    elif not -MAX_SAFE_INT <= value <= MAX_SAFE_INT:
        problems.append(
            Problem(index, key, "a number beyond ±(2^53 - 1) would be rounded: send it as a string")
        )


def _check_headers(index: int, value: object, problems: list[Problem]) -> None:
    if not isinstance(value, dict):
        problems.append(Problem(index, "headers", "must be an object of string values"))
        return
    if len(value) > MAX_HEADERS:
        problems.append(Problem(index, "headers", f"more than {MAX_HEADERS} headers"))
    for name, v in value.items():
        if not isinstance(v, str) or len(name) > MAX_KEY or len(v) > MAX_STRING:
            problems.append(Problem(index, f"headers.{name}", "must be a string"))
            return


def validate(index: int, item: object, received_at: float, problems: list[Problem]) -> dict | None:
    """Check one incoming event; return it normalised (type, id, time filled in) or None.

    Appends every problem found to `problems`, so a batch reports all of its bad fields.
    """
    if not isinstance(item, dict):
        problems.append(Problem(index, "", "must be a JSON object"))
        return None
    before = len(problems)
    raw_type = item.get("event_type")
    etype = raw_type.lower() if isinstance(raw_type, str) else None
    if raw_type is None:
        problems.append(Problem(index, "event_type", "required"))
    elif etype not in VOCABULARY:
        problems.append(Problem(index, "event_type", f"unknown event type {str(raw_type)[:64]!r}"))
    if len(item) > MAX_FIELDS:
        problems.append(Problem(index, "", f"more than {MAX_FIELDS} fields"))
    for key, value in item.items():
        if len(key) > MAX_KEY:
            problems.append(Problem(index, key[:MAX_KEY], f"field name longer than {MAX_KEY}"))
        elif key == "headers":
            _check_headers(index, value, problems)
        elif (kind := FIELD_TYPES.get(key)) is not None and value is not None:
            if kind is _STRING and isinstance(value, str):  # the common case: no call
                if len(value) > MAX_STRING:
                    problems.append(Problem(index, key, f"longer than {MAX_STRING} characters"))
            elif not _has_type(value, kind):
                problems.append(Problem(index, key, f"must be {kind}"))
        else:
            _check_scalar(index, key, value, problems)
    event_id = item.get("id")
    if event_id is not None and (
        not isinstance(event_id, str)
        or not 0 < len(event_id) <= MAX_ID
        or not event_id.isprintable()
    ):
        problems.append(
            Problem(index, "id", f"must be a printable string of 1 to {MAX_ID} characters")
        )
    event_time = item.get("event_time")
    if event_time is not None and (
        isinstance(event_time, bool) or not isinstance(event_time, int | float) or event_time < 0
    ):
        problems.append(Problem(index, "event_time", "must be seconds since the Unix epoch"))
    if etype in VOCABULARY:
        for field in VOCABULARY[etype][1]:
            value = item.get(field)
            if value is None or value == "":
                problems.append(Problem(index, field, "required"))
        email = item.get("email")
        if isinstance(email, str) and email and ("@" not in email or len(email) > 254):
            problems.append(Problem(index, "email", "not an email address"))
        status = item.get("status")
        # A list or object status is already reported above (and is unhashable: no `in`).
        if (
            etype == "delivery_attempt"
            and isinstance(status, str | int | float)
            and status not in ATTEMPT_STATUSES | {""}
        ):
            problems.append(
                Problem(index, "status", f"must be one of {', '.join(sorted(ATTEMPT_STATUSES))}")
            )
    if len(problems) > before:
        return None
    event = dict(item)
    event["event_type"] = etype
    if event_id is None:
        event["id"] = new_id()
    if event_time is None:
        event["event_time"] = int(received_at)
    if etype not in HEADER_EVENTS:
        event.pop("headers", None)
    return event
