"""Pure360's own wire format ("pure360"): its form fields per trigger (pure: no I/O).

Integrations written for that platform read its HTTP POST form, its FTP log lines (the same
form, one per line) and its client-pull CSV. This module turns a relay event into that
vocabulary once, and the http destination, the log-file formats and the SOAP pull all use it:

- `type` is the trigger name (relay's triggers are the platform's names; `DELIVERYATTEMPT`
  and `SPAMCOMPLAINT` are relay's own two extra ones);
- each trigger has its documented fields, in the documented order, always present (empty
  when the event has no value: a receiver reading `$_POST['deliveryDate']` finds the key);
- dates are Unix seconds (integers);
- a list is repeated keys with `[]` (`List_Names[]=…`), as PHP parses it into an array;
- every other field of the event (`id`, `listid`, `click_tracking_id`, `is_bot`, the
  engine's own extras, `headers.<Name>`) follows under its own name: the platform's
  "custom fields" of the recipient.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlencode

from .events import VOCABULARY

# The platform's eleven triggers; relay also has DELIVERYATTEMPT and SPAMCOMPLAINT.
SEED_TRIGGERS = (
    "DELIVERYSTART",
    "DELIVERY",
    "OPEN",
    "CLICK",
    "BOUNCE",
    "BLOCKED",
    "OPTIN",
    "OPTOUT",
    "SOFTBOUNCE",
    "SMSOPTOUT",
    "SMSFAILED",
)
TRIGGER_OF = {etype: trigger for etype, (trigger, _) in VOCABULARY.items()}
EVENT_TYPE_OF = {trigger: etype for etype, trigger in TRIGGER_OF.items()}

# A field: (the platform's name, relay's field). A relay field in DATES is Unix seconds.
# "=EMAIL" is a constant. Names ending in [] are lists (one pair per value).
Field = tuple[str, str]
_RECIPIENT: tuple[Field, ...] = (
    ("Event_date", "event_time"),
    ("email", "email"),
    ("mobile", "phone"),
    ("messageName", "message_name"),
    ("deliveryDate", "delivery_date"),
    ("Delivery_ID", "sendid"),
)
_SMS: tuple[Field, ...] = (
    ("Event_date", "event_time"),
    ("mobile", "phone"),
    ("messageName", "message_name"),
    ("deliveryDate", "delivery_date"),
    ("Delivery_ID", "sendid"),
)
FIELDS: dict[str, tuple[Field, ...]] = {
    "DELIVERYSTART": (
        ("profile", "profile"),
        ("message_Type", "=EMAIL"),
        ("MessageName", "message_name"),
        ("Delivery_ID", "sendid"),
        ("List_Names[]", "listid"),
        ("Delivery_Scheduled_Date", "scheduled_date"),
        ("Delivery_Start_Date", "event_time"),
        ("Delivery_Complete_Date", "complete_date"),
    ),
    "DELIVERY": (
        ("notificationSubject", "subject"),
        ("user", "user"),
        ("Profile", "profile"),
        ("Message_Type", "=EMAIL"),
        ("Message_Name", "message_name"),
        ("Delivery_ID", "sendid"),
        ("List_Names[]", "listid"),
        ("Delivery_Scheduled_Date", "scheduled_date"),
        ("Delivery_Start_Date", "start_date"),
        ("Delivery_Complete_Date", "event_time"),
        ("Emails_Sent_/_Credits_Used", "sent"),
    ),
    "OPEN": _RECIPIENT,
    "CLICK": (*_RECIPIENT, ("URL", "click_url")),
    "BOUNCE": _RECIPIENT,
    "SOFTBOUNCE": _RECIPIENT,
    "BLOCKED": _RECIPIENT,
    "OPTIN": (*_RECIPIENT, ("List_Names[]", "listid")),
    "OPTOUT": (*_RECIPIENT, ("List_Names[]", "listid")),
    "SMSOPTOUT": _SMS,
    "SMSFAILED": _SMS,
    "DELIVERYATTEMPT": (*_RECIPIENT, ("status", "status")),
    "SPAMCOMPLAINT": _RECIPIENT,
}
DATES = frozenset({"event_time", "delivery_date", "scheduled_date", "start_date", "complete_date"})
# Relay's own bookkeeping: said by `type`, never repeated as a custom field.
_NOT_CUSTOM = frozenset({"event_type"})


def _text(field: str, value: object) -> str:
    """A value as the form writes it: dates as whole Unix seconds, booleans as true/false."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if field in DATES and isinstance(value, int | float):
        return str(int(value))
    return str(value)


def _values(field: str, value: object) -> list[str]:
    """A list field's values: a list as given, a comma-separated string split, none if empty."""
    if value is None or value == "":
        return []
    if isinstance(value, list):
        return [_text(field, v) for v in value]
    return [v.strip() for v in str(value).split(",") if v.strip()]


@dataclass(frozen=True, slots=True)
class _Plan:
    """A trigger's fields worked out once: (name, relay field or constant, is a constant)."""

    fields: tuple[tuple[str, str, bool], ...]
    used: frozenset[str]  # relay fields the form names; the rest are custom fields


def _plan(fields: tuple[Field, ...]) -> _Plan:
    plan = tuple((n, s[1:], True) if s.startswith("=") else (n, s, False) for n, s in fields)
    used = {source for _, source, constant in plan if not constant}
    return _Plan(plan, frozenset(used | _NOT_CUSTOM))


_PLANS = {trigger: _plan(fields) for trigger, fields in FIELDS.items()}
_FALLBACK = _plan(_RECIPIENT)


def _items(event: dict) -> list[tuple[str, str | list[str]]]:
    """`type`, the trigger's fields, then custom fields; a `[]` field's value is a list."""
    etype = str(event.get("event_type"))
    trigger = TRIGGER_OF.get(etype, etype.upper())
    plan = _PLANS.get(trigger, _FALLBACK)
    items: list[tuple[str, str | list[str]]] = [("type", trigger)]
    for name, source, constant in plan.fields:
        if constant:
            items.append((name, source))
        elif name.endswith("[]"):
            items.append((name, _values(source, event.get(source))))
        else:
            items.append((name, _text(source, event.get(source))))
    for key, value in event.items():
        if key in plan.used:
            continue
        if key == "headers" and isinstance(value, dict):
            items.extend((f"headers.{k}", _text(k, v)) for k, v in value.items())
        else:
            items.append((key, _text(key, value)))
    return items


def form_pairs(event: dict) -> list[tuple[str, str]]:
    """The event as the platform's form: one pair per value, `name[]` once per list item."""
    pairs: list[tuple[str, str]] = []
    for name, value in _items(event):
        if isinstance(value, list):
            pairs.extend((name, v) for v in value)
        else:
            pairs.append((name, value))
    return pairs


def form_body(event: dict) -> str:
    """`application/x-www-form-urlencoded`, `[]` kept literal in names as PHP writes them."""
    return urlencode(form_pairs(event), safe="[]/")


def _row(event: dict) -> dict[str, str]:
    """The event as one CSV row: a list's values joined by `|` under its name without `[]`."""
    return {
        (name[:-2] if isinstance(value, list) else name): (
            "|".join(value) if isinstance(value, list) else value
        )
        for name, value in _items(event)
    }


def _line(values: Iterable[str]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(list(values))
    return out.getvalue()


def csv_batch(events: Iterable[dict]) -> tuple[dict[str, str], bytes]:
    """A client-pull batch: per trigger its CSV header (`eventMeta`), and the rows (`eventData`).

    Rows are in the batch's order, one per event, each starting with its `type`, so a reader
    picks the header by the first cell. A trigger's header has its documented fields, then
    every custom field any of its events in this batch has (empty where one lacks it).
    """
    rows = [_row(event) for event in events]
    columns: dict[str, dict[str, None]] = {}
    for row in rows:
        columns.setdefault(row["type"], {}).update(dict.fromkeys(row))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for row in rows:
        writer.writerow([row.get(c, "") for c in columns[row["type"]]])
    meta = {trigger: _line(cols).rstrip("\n") for trigger, cols in columns.items()}
    return meta, out.getvalue().encode()
