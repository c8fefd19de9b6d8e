"""The config schema documents exactly what the parser accepts: every key, default and choice.

The parser is run on a config that uses every section and destination type while each key it
asks for is recorded (`Table.raw`, `Table.choice`); a key the schema lacks, a key the parser no
longer reads, a different default or a different list of legal values fails here, before the
generated reference page can mislead anyone.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from relay import config
from relay.config.reader import Table, parse_duration
from relay.config.schema import SECTIONS, Key, documented

MINIMAL = """
[server]
[storage]
[ingest]
[tracking]
[console]
[log]
[destinations.crm]
type = "http"
url = "http://127.0.0.1:9/hook"
[destinations.warehouse]
type = "pull"
[destinations.inbox]
type = "email"
host = "127.0.0.1"
from = "relay@example.com"
to = ["ops@example.com"]
[destinations.files]
type = "ftp"
host = "127.0.0.1"
[destinations.vault]
type = "sftp"
host = "127.0.0.1"
username = "relay"
password = "secret"
[[routes]]
events = ["*"]
destinations = ["crm", "warehouse", "inbox", "files", "vault"]
match = { mail_class = ["news"], listid = ["7"] }
"""
TYPES = {"crm": "http", "warehouse": "pull", "inbox": "email", "files": "ftp", "vault": "sftp"}
NAMES = {kind: name for name, kind in TYPES.items()}


def _where(path: str) -> tuple[str, str]:
    """A table path → (schema section, key prefix): `destinations.ftp.retry` → ("ftp", "retry.")."""
    parts = re.sub(r"\[\d+\]", "[]", path).split(".")
    if parts[0] == "destinations" and len(parts) > 1 and parts[1] in TYPES:
        return TYPES[parts[1]], ".".join(parts[2:] + [""]).lstrip(".")
    return parts[0], ".".join(parts[1:] + [""]).lstrip(".")


@pytest.fixture
def asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[tuple[str, str], dict[str, Any]]:
    """Every (section, key) the parser reads from MINIMAL, with its default and legal values."""
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    raw, choice = Table.raw, Table.choice

    def record_raw(self: Table, key: str, default: Any = None) -> Any:
        if self.path and self.path != "destinations":  # not the top level, not the names
            section, prefix = _where(self.path)
            seen.setdefault((section, prefix + key), {})["default"] = default
        return raw(self, key, default)

    def record_choice(self: Table, key: str, choices: Any, default: str, fold: bool = True) -> str:
        legal = list(choices)
        section, prefix = _where(self.path)
        seen.setdefault((section, prefix + key), {})["choices"] = tuple(legal)
        return choice(self, key, legal, default, fold)

    monkeypatch.setattr(Table, "raw", record_raw)
    monkeypatch.setattr(Table, "choice", record_choice)
    path = tmp_path / "relay.toml"
    path.write_text(MINIMAL)
    config.load(path)
    return seen


def test_every_key_the_parser_reads_is_documented_and_no_other(asked) -> None:
    schema = documented()
    assert sorted(set(asked) - set(schema)) == [], "keys the parser reads but the schema lacks"
    assert sorted(set(schema) - set(asked)) == [], "keys in the schema the parser never reads"


def test_documented_defaults_are_the_parsers(asked) -> None:
    wrong = []
    for where, key in documented().items():
        if key.computed or "default" not in asked[where]:
            continue
        if not _same(key, asked[where]["default"]):
            wrong.append((where, key.default, asked[where]["default"]))
    assert not wrong, "schema default != parser default: " + repr(wrong)


def test_documented_choices_are_the_parsers(asked) -> None:
    wrong = [
        (where, key.choices, asked[where]["choices"])
        for where, key in documented().items()
        if "choices" in asked[where] and tuple(key.choices) != asked[where]["choices"]
    ]
    assert not wrong, "schema choices != parser choices: " + repr(wrong)


def _same(key: Key, parser_default: Any) -> bool:
    if key.default is None:
        return parser_default is None
    value = tomllib.loads(f"v = {key.default}")["v"]
    if key.type == "duration":
        return parse_duration(value) == parse_duration(parser_default)
    if isinstance(parser_default, tuple):
        parser_default = list(parser_default)
    return value == parser_default


@pytest.mark.parametrize(
    "section,key",
    [(s, k) for s in SECTIONS for k in s.keys],
    ids=lambda v: getattr(v, "name", None) or getattr(v, "title", ""),
)
def test_each_example_value_is_accepted_by_the_parser(
    section, key, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Files named in examples exist beside the config, secrets in the environment; some keys
    # need a companion to be legal.
    for name in ("ca.pem", "sftp_ed25519", "known_hosts"):
        (tmp_path / name).write_text("x")
    for env in re.findall(r"env:(\w+)", key.example):
        monkeypatch.setenv(env, "x")
    doc = tomllib.loads(MINIMAL)
    if section.path == "routes[]":
        table = doc["routes"][0]
    elif section.destination_type:
        table = doc["destinations"][NAMES[section.destination_type]]
    else:
        table = doc[section.path]
    target, name = table, key.name
    if "." in name:
        head, name = name.split(".", 1)
        target = table.setdefault(head, {})
    target[name] = tomllib.loads(f"v = {key.example}")["v"]
    doc["storage"].setdefault("dsn", "postgresql://relay@127.0.0.1/relay")
    if key.name == "listen":
        doc["ingest"]["tokens"] = ["t"]
        doc["destinations"]["warehouse"]["tokens"] = ["t"]
    if (section.destination_type, key.name) == ("email", "username"):
        table["password"] = "p"
    if (section.destination_type, key.name) in {("email", "tls"), ("email", "starttls")}:
        table["port"] = 2525
    if key.name == "type":
        return  # the type decides which other keys are legal: covered by the tests above
    path = tmp_path / "relay.toml"
    path.write_text(_dump(doc))
    config.load(path)


def _dump(doc: dict[str, Any]) -> str:
    """Just enough TOML writing for MINIMAL's shape (tomllib reads, it does not write)."""
    import json

    def value(v: Any) -> str:
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{json.dumps(k)} = {value(x)}" for k, x in v.items()) + " }"
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return json.dumps(v)

    lines = []
    for name, table in doc.items():
        if name == "destinations":
            for dname, dtable in table.items():
                lines.append(f"[destinations.{dname}]")
                lines += [f"{json.dumps(k)} = {value(v)}" for k, v in dtable.items()]
        elif name == "routes":
            for route in table:
                lines.append("[[routes]]")
                lines += [f"{json.dumps(k)} = {value(v)}" for k, v in route.items()]
        else:
            lines.append(f"[{name}]")
            lines += [f"{json.dumps(k)} = {value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"
