"""Both backends implement both store interfaces, member for member, with the same
parameters: what the contract suite (tests/integration/test_store.py) then runs on both."""

from __future__ import annotations

import inspect

import pytest

from relay.store import Control, Queue, Store
from relay.store.postgres import PostgresStore
from relay.store.sqlite import SqliteStore


def members(protocol: type) -> dict[str, object]:
    return {
        name: value
        for name, value in vars(protocol).items()
        if not name.startswith("_") and (callable(value) or isinstance(value, property))
    } | ({"node": None} if "node" in protocol.__annotations__ else {})


def test_the_two_interfaces_split_the_store_without_overlap() -> None:
    queue, control = set(members(Queue)), set(members(Control))
    assert not queue & control
    assert {"append", "claim", "ack", "retry", "dead", "release", "next_due", "replay"} <= queue
    assert {"stats", "event", "dead_list", "audit_log", "paused", "node", "lead"} <= control
    assert set(members(Store)) == {"open", "close"}


@pytest.mark.parametrize("backend", [SqliteStore, PostgresStore])
@pytest.mark.parametrize("protocol", [Queue, Control, Store])
def test_each_backend_implements_each_interface(backend: type, protocol: type) -> None:
    for name, declared in members(protocol).items():
        assert hasattr(backend, name) or name == "node", f"{backend.__name__}.{name}"
        if callable(declared):
            want = list(inspect.signature(declared).parameters)
            got = list(inspect.signature(getattr(backend, name)).parameters)
            assert got == want, f"{backend.__name__}.{name}{tuple(got)} != {tuple(want)}"
