"""The circuit breaker's state machine, driven by a fake clock."""

from __future__ import annotations

import pytest

from relay.config import CircuitPolicy, ConfigError, load
from relay.dispatch.circuit import Circuit, CircuitState, Gate

POLICY = CircuitPolicy(failures=3, cooldown_s=10.0, max_cooldown_s=35.0)


def failing(circuit: Circuit, n: int, now: float = 0.0) -> list[str | None]:
    return [circuit.record(False, now) for _ in range(n)]


def test_opens_after_n_consecutive_failures():
    c = Circuit(POLICY)
    assert failing(c, 3) == [None, None, "opened"]
    assert c.state is CircuitState.OPEN and c.is_open
    assert c.gate(9.9) is Gate.WAIT and c.wait_s(4.0) == 6.0


def test_a_success_resets_the_count():
    c = Circuit(POLICY)
    failing(c, 2)
    assert c.record(True, 0.0) is None
    assert failing(c, 2) == [None, None] and c.state is CircuitState.CLOSED


def test_one_probe_after_the_cooldown_and_success_closes():
    c = Circuit(POLICY)
    failing(c, 3)
    assert c.gate(10.0) is Gate.PROBE
    c.probe_sent()
    assert c.gate(11.0) is Gate.WAIT  # one probe at a time
    assert c.record(True, 12.0, probe=True) == "closed"
    assert c.gate(12.0) is Gate.SEND and c.cooldown_s == 10.0


@pytest.mark.parametrize(
    ("probes_failed", "cooldown"),
    [
        (1, 20.0),  # 10 × 2
        (2, 35.0),  # 10 × 2 × 2 = 40, capped at max_cooldown 35
        (3, 35.0),  # stays at the cap
    ],
)
def test_a_failed_probe_reopens_with_the_cooldown_doubled_and_capped(probes_failed, cooldown):
    c = Circuit(POLICY)
    failing(c, 3)
    now = 0.0
    for _ in range(probes_failed):
        now += c.cooldown_s
        assert c.gate(now) is Gate.PROBE
        c.probe_sent()
        assert c.record(False, now, probe=True) == "reopened"
    assert c.cooldown_s == cooldown
    assert c.gate(now + cooldown - 0.1) is Gate.WAIT
    assert c.gate(now + cooldown) is Gate.PROBE


def test_late_failures_of_sends_started_before_opening_change_nothing():
    c = Circuit(POLICY)
    failing(c, 3)
    assert failing(c, 5, now=1.0) == [None] * 5
    assert c.retry_at == 10.0 and c.cooldown_s == 10.0


def test_any_success_closes_an_open_circuit():
    c = Circuit(POLICY)
    failing(c, 3)
    assert c.record(True, 1.0) == "closed" and not c.is_open


def test_opened_counts_each_opening_not_each_reopening():
    c = Circuit(POLICY)
    assert c.opened == 0
    failing(c, 3)
    assert c.opened == 1
    c.probe_sent()
    assert c.record(False, 10.0, probe=True) == "reopened"
    assert c.opened == 1  # still the same outage
    assert c.record(True, 31.0) == "closed"
    failing(c, 3, now=40.0)
    assert c.opened == 2


def test_wait_s_is_zero_unless_open_and_never_negative():
    c = Circuit(POLICY)
    assert c.wait_s(5.0) == 0.0  # closed
    failing(c, 3)
    assert c.wait_s(4.0) == 6.0
    assert c.wait_s(12.5) == 0.0  # past the cooldown: due now, not overdue
    c.probe_sent()
    assert c.wait_s(12.5) == 0.0  # probing: nothing to wait for


def test_a_send_started_before_the_probe_failing_late_does_not_reopen():
    """While the probe is out, a failure that is not the probe's changes nothing."""
    c = Circuit(POLICY)
    failing(c, 3)
    c.probe_sent()
    assert c.record(False, 11.0) is None
    assert c.state is CircuitState.PROBING and c.cooldown_s == 10.0


def test_probe_now_lets_a_probe_go_at_once_only_when_open():
    c = Circuit(POLICY)
    assert c.probe_now() is False  # closed: nothing to probe
    failing(c, 3)
    assert c.gate(0.5) is Gate.WAIT
    assert c.probe_now() is True
    assert c.gate(0.5) is Gate.PROBE  # before the 10 s cooldown
    c.probe_sent()
    assert c.probe_now() is False  # one is already out
    assert c.gate(0.5) is Gate.WAIT


def test_failures_zero_turns_circuit_breaking_off():
    c = Circuit(CircuitPolicy(failures=0))
    assert failing(c, 100) == [None] * 100
    assert c.gate(0.0) is Gate.SEND


# --- config: circuit = { failures, cooldown, max_cooldown } on http destinations ----------

HOOK = 'routes = []\n[destinations.crm]\ntype = "http"\nurl = "https://crm.example.com/hook"\n'


def _load(tmp_path, extra: str):
    path = tmp_path / "relay.toml"
    path.write_text(HOOK + extra)
    return load(path).destinations["crm"]


def test_config_defaults(tmp_path):
    assert _load(tmp_path, "").circuit == CircuitPolicy(10, 30.0, 600.0)


def test_config_values(tmp_path):
    dest = _load(tmp_path, 'circuit = { failures = 5, cooldown = "2s", max_cooldown = "1m" }\n')
    assert dest.circuit == CircuitPolicy(5, 2.0, 60.0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("circuit = { failures = -1 }", "destinations.crm.circuit.failures: must be at least 0"),
        (
            'circuit = { cooldown = "soon" }',
            "destinations.crm.circuit.cooldown: must be a duration",
        ),
        (
            'circuit = { cooldown = "1m", max_cooldown = "10s" }',
            "destinations.crm.circuit.max_cooldown: must not be less than cooldown",
        ),
        ("circuit = { failure = 3 }", "destinations.crm.circuit.failure: unknown key"),
    ],
)
def test_config_errors_name_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        _load(tmp_path, text + "\n")
