"""Event validation and ids."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from relay.domain.events import EVENT_TYPES, VOCABULARY, Problem, event_type_for, new_id, validate

EXAMPLES = json.loads((Path(__file__).parents[2] / "examples" / "events.json").read_text())
BY_TYPE = {e["event_type"]: e for e in EXAMPLES}
NOW = 1_700_000_000.0

REQUIRED = {
    "delivery_start": ("sendid",),
    "delivery": ("sendid",),
    "delivery_attempt": ("email", "status"),
    "engine_open": ("email",),
    "engine_click": ("email", "click_url"),
    "bounce": ("email",),
    "soft_bounce": ("email",),
    "blocked": ("email",),
    "optin": ("email", "listid"),
    "engine_unsub": ("email",),
    "scomp": ("email",),
    "sms_optout": ("phone",),
    "sms_failed": ("phone",),
}
TRIGGERS = {
    "delivery_start": "DELIVERYSTART",
    "delivery": "DELIVERY",
    "delivery_attempt": "DELIVERYATTEMPT",
    "engine_open": "OPEN",
    "engine_click": "CLICK",
    "bounce": "BOUNCE",
    "soft_bounce": "SOFTBOUNCE",
    "blocked": "BLOCKED",
    "optin": "OPTIN",
    "engine_unsub": "OPTOUT",
    "scomp": "SPAMCOMPLAINT",
    "sms_optout": "SMSOPTOUT",
    "sms_failed": "SMSFAILED",
}


def check(item: object) -> tuple[dict | None, list[Problem]]:
    problems: list[Problem] = []
    return validate(0, item, NOW, problems), problems


def fields(problems: list[Problem]) -> set[str]:
    return {p.field for p in problems}


def test_the_vocabulary_is_the_spec_table():
    assert set(BY_TYPE) == EVENT_TYPES == set(REQUIRED)
    assert {t: req for t, (_, req) in VOCABULARY.items()} == REQUIRED
    assert {t: trig for t, (trig, _) in VOCABULARY.items()} == TRIGGERS


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e["event_type"])
def test_every_example_event_is_valid(example):
    event, problems = check(example)
    assert problems == []
    assert event is not None
    assert event["event_type"] == example["event_type"]
    assert isinstance(event["id"], str) and event["id"]
    for key, value in example.items():
        if key != "headers":
            assert event[key] == value  # other fields are kept as given


@pytest.mark.parametrize(
    ("etype", "field"),
    [(t, f) for t, req in REQUIRED.items() for f in req],
)
def test_removing_a_required_field_names_it(etype, field):
    item = dict(BY_TYPE[etype])
    del item[field]
    event, problems = check(item)
    assert event is None
    assert Problem(0, field, "required") in problems


@pytest.mark.parametrize(("etype", "field"), [(t, f) for t, req in REQUIRED.items() for f in req])
def test_an_empty_required_field_counts_as_missing(etype, field):
    event, problems = check({**BY_TYPE[etype], field: ""})
    assert event is None
    assert field in fields(problems)


def test_every_problem_of_an_item_is_reported_with_its_index():
    problems: list[Problem] = []
    assert validate(7, {"event_type": "engine_click"}, NOW, problems) is None
    assert {(p.index, p.field) for p in problems} == {(7, "email"), (7, "click_url")}
    assert problems[0].as_dict() == {"index": 7, "field": problems[0].field, "message": "required"}


def test_missing_event_type_is_named():
    event, problems = check({"email": "a@example.com"})
    assert event is None
    assert Problem(0, "event_type", "required") in problems


def test_unknown_event_type_is_named():
    event, problems = check({"event_type": "exploded", "email": "a@example.com"})
    assert event is None
    assert fields(problems) == {"event_type"}
    assert "exploded" in problems[0].message


def test_event_type_is_case_insensitive_and_normalised():
    event, problems = check({"event_type": "BOUNCE", "email": "a@example.com"})
    assert problems == []
    assert event["event_type"] == "bounce"


@pytest.mark.parametrize("etype", sorted(EVENT_TYPES))
def test_triggers_and_types_both_name_the_event_type(etype):
    assert event_type_for(etype) == etype
    assert event_type_for(etype.upper()) == etype
    assert event_type_for(TRIGGERS[etype]) == etype
    assert event_type_for(TRIGGERS[etype].lower()) == etype


def test_an_unknown_name_is_no_event_type():
    assert event_type_for("CLICKS") is None


def test_a_non_object_is_refused():
    for item in ([1, 2], "bounce", 3, None):
        event, problems = check(item)
        assert event is None and len(problems) == 1


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("listid", {"nested": "object"}),
        ("mail_class", ["a", "list"]),
        ("email", {"a": 1}),
    ],
)
def test_a_nested_value_in_a_scalar_field_is_refused(field, value):
    event, problems = check({**BY_TYPE["bounce"], field: value})
    assert event is None
    assert field in fields(problems)


@pytest.mark.parametrize("value", [True, False, "yesterday", -1, [1]])
def test_event_time_must_be_epoch_seconds(value):
    event, problems = check({**BY_TYPE["bounce"], "event_time": value})
    assert event is None
    assert fields(problems) == {"event_time"}


def test_a_fractional_event_time_is_accepted():
    event, problems = check({**BY_TYPE["bounce"], "event_time": 1317305300.25})
    assert problems == [] and event["event_time"] == 1317305300.25


def test_an_id_up_to_128_characters_is_kept():
    event, problems = check({**BY_TYPE["bounce"], "id": "x" * 128})
    assert problems == [] and event["id"] == "x" * 128


@pytest.mark.parametrize("bad_id", ["x" * 129, "", 12345, "bad\nid", True])
def test_a_bad_id_is_refused(bad_id):
    event, problems = check({**BY_TYPE["bounce"], "id": bad_id})
    assert event is None
    assert fields(problems) == {"id"}


def test_a_bad_attempt_status_is_refused():
    event, problems = check({**BY_TYPE["delivery_attempt"], "status": "exploded"})
    assert event is None
    assert fields(problems) == {"status"}


@pytest.mark.parametrize(
    "status", ["success", "failure", "failure_toolong", "deferral", "connmaxout"]
)
def test_every_attempt_status_is_accepted(status):
    event, problems = check({**BY_TYPE["delivery_attempt"], "status": status})
    assert problems == [] and event["status"] == status


def test_an_email_without_an_at_sign_is_refused():
    event, problems = check({**BY_TYPE["bounce"], "email": "not-an-address"})
    assert event is None
    assert fields(problems) == {"email"}


def test_a_string_over_the_limit_is_refused():
    event, problems = check({**BY_TYPE["bounce"], "message": "x" * 100_000})
    assert event is None
    assert fields(problems) == {"message"}


def test_too_many_fields_are_refused():
    item = {**BY_TYPE["bounce"], **{f"f{i}": i for i in range(200)}}
    event, problems = check(item)
    assert event is None and problems


def test_headers_must_map_strings_to_strings():
    event, problems = check({**BY_TYPE["delivery"], "headers": {"X-Count": 3}})
    assert event is None
    assert fields(problems) == {"headers.X-Count"}
    event, problems = check({**BY_TYPE["delivery"], "headers": "X-A: b"})
    assert event is None
    assert fields(problems) == {"headers"}


def test_defaults_id_and_event_time_filled_in():
    event, problems = check({"event_type": "bounce", "email": "a@example.com"})
    assert problems == []
    assert event["event_time"] == int(NOW)
    assert isinstance(event["id"], str) and len(event["id"]) == 28


def test_a_given_id_and_event_time_are_kept():
    event, _ = check(
        {"event_type": "bounce", "email": "a@example.com", "id": "mine", "event_time": 5}
    )
    assert (event["id"], event["event_time"]) == ("mine", 5)


def test_validate_does_not_change_the_input():
    item = {"event_type": "BOUNCE", "email": "a@example.com", "headers": {"X-A": "b"}}
    snapshot = json.loads(json.dumps(item))
    check(item)
    assert item == snapshot


@pytest.mark.parametrize("etype", ["delivery", "delivery_attempt"])
def test_headers_are_kept_in_delivery_events(etype):
    event, problems = check({**BY_TYPE[etype], "headers": {"X-Customer-Ref": "A-1001"}})
    assert problems == []
    assert event["headers"] == {"X-Customer-Ref": "A-1001"}


@pytest.mark.parametrize("etype", sorted(EVENT_TYPES - {"delivery", "delivery_attempt"}))
def test_headers_are_dropped_from_other_events(etype):
    event, problems = check(
        {**BY_TYPE[etype], "headers": {"X-Customer-Ref": "A-1001"}, "click_tracking_id": "c1"}
    )
    assert problems == []
    assert "headers" not in event
    assert event["click_tracking_id"] == "c1"  # passed on in every event


def test_generated_ids_are_unique_and_sort_in_creation_order():
    ids = [new_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    assert all(len(i) == 28 and i.isalnum() and i == i.lower() for i in ids)


def test_ids_made_in_a_later_millisecond_sort_after():
    # The counter restarts at a random point each millisecond; the time prefix still wins.
    for _ in range(20):
        first = new_id()
        start_ms = time.time_ns() // 1_000_000
        while time.time_ns() // 1_000_000 <= start_ms:  # spin into the next millisecond
            pass
        assert first < new_id()


@pytest.mark.parametrize("status", [["success"], {"s": "success"}, 5, True])
def test_a_non_string_attempt_status_is_a_problem_not_a_crash(status):
    event, problems = check({**BY_TYPE["delivery_attempt"], "status": status})
    assert event is None
    assert fields(problems) == {"status"}
