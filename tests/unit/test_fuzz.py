"""Hypothesis: config parsing and event validation never raise anything but their own errors."""

from __future__ import annotations

import json
import tomllib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.config import ConfigError, load
from relay.domain.events import validate

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=40)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
KEYS = [
    "event_type",
    "id",
    "event_time",
    "email",
    "phone",
    "sendid",
    "listid",
    "status",
    "click_url",
    "headers",
    "mail_class",
    "x",
]
TYPES = ["bounce", "delivery_attempt", "engine_click", "optin", "sms_failed", "BOUNCE", "nope"]


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        json_values,
        st.dictionaries(st.sampled_from(KEYS), st.one_of(json_values, st.sampled_from(TYPES))),
    )
)
def test_validate_never_raises_and_either_accepts_or_names_a_field(item):
    problems: list = []
    event = validate(3, item, 1_700_000_000.0, problems)
    assert (event is None) == bool(problems)
    assert all(p.index == 3 for p in problems)
    if event is not None:
        assert isinstance(event["id"], str) and event["event_type"] == event["event_type"].lower()


toml_values = st.one_of(
    st.booleans(),
    st.integers(-5, 10**6),
    st.text(max_size=30),
    st.sampled_from(
        [
            "30s",
            "5m",
            "http://127.0.0.1:9/x",
            "pull",
            "http",
            "POST",
            "*",
            "env:NOPE_NOT_SET",
            "127.0.0.1:0",
            "0.0.0.0:80",
        ]
    ),
    st.lists(st.sampled_from(["*", "CLICK", "crm", "default", "bogus"]), max_size=3),
)
tables = st.dictionaries(
    st.sampled_from(
        [
            "type",
            "url",
            "listen",
            "path",
            "tokens",
            "events",
            "destinations",
            "retry",
            "method",
            "format",
            "delay",
            "batch_size",
            "lease",
            "retention",
            "ip",
            "bots",
        ]
    ),
    toml_values,
    max_size=5,
)
configs = st.fixed_dictionaries(
    {},
    optional={
        "server": tables,
        "storage": tables,
        "ingest": tables,
        "tracking": tables,
        "log": tables,
        "destinations": st.dictionaries(
            st.sampled_from(["crm", "feed", "bad name"]), tables, max_size=2
        ),
        "routes": st.lists(tables, max_size=2),
        "typo": tables,
    },
)


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False).replace(
            "\x7f", "\\u007f"
        )  # JSON escapes are TOML basic-string escapes
    return "[" + ", ".join(_toml(v) for v in value) + "]"


def _render(config: dict) -> str:
    lines = []
    for section, body in config.items():
        if section == "destinations":
            for name, table in body.items():
                lines.append(f'[destinations."{name}"]')
                lines += [f"{k} = {_toml(v)}" for k, v in table.items() if not isinstance(v, dict)]
        elif section == "routes":
            for table in body:
                lines.append("[[routes]]")
                lines += [f"{k} = {_toml(v)}" for k, v in table.items()]
        else:
            lines.append(f"[{section}]")
            lines += [f"{k} = {_toml(v)}" for k, v in body.items()]
    return "\n".join(lines) + "\n"


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(configs)
def test_config_load_either_works_or_names_the_file_and_key(tmp_path, config):
    path = tmp_path / "relay.toml"
    text = _render(config)
    tomllib.loads(text)  # the generator writes valid TOML; relay must judge its content
    path.write_text(text)
    try:
        load(path)
    except ConfigError as exc:
        assert exc.problems
        for problem in exc.problems:  # each names the file and a key, one a line
            assert problem.startswith(f"{path}: ")
            assert "\n" not in problem
            key, what = problem[len(f"{path}: ") :].split(": ", 1)
            assert names_a_key(config, key, what), problem


def names_a_key(config: dict, key: str, what: str) -> bool:
    """`key` (`storage.retention`, `destinations.crm.type`, `routes[0].events`) leads through
    the config's own tables to a key it has, or to one it lacks (perhaps in a table it lacks)
    that the message says is required."""
    node: object = config
    parts = key.replace("[", ".[").split(".")
    for part in parts:
        if part.startswith("["):
            index = int(part.strip("[]"))
            if isinstance(node, str) and index == 0:  # one string for a list of strings
                continue
            if not isinstance(node, list) or index >= len(node):
                return False
            node = node[index]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:  # a required key, perhaps in a table the config leaves out
            return isinstance(node, dict) and what.startswith("required")
    return True
