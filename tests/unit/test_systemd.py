"""sd_notify without libsystemd: addresses, the watchdog interval, datagrams on the wire."""

from __future__ import annotations

import os
import socket
import tempfile

import pytest

from relay.systemd import Notifier


def test_without_notify_socket_everything_is_a_no_op():
    n = Notifier.from_env({})
    assert not n.enabled and n.watchdog_s is None
    n.ready("x")
    n.stopping()  # nothing to send to, nothing raised


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 30.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 30.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
    ],
)
def test_watchdog_interval_from_the_environment(env, expected):
    assert Notifier.from_env({"NOTIFY_SOCKET": "/run/x", **env}).watchdog_s == expected


def _receive(sock: socket.socket) -> list[str]:
    sock.settimeout(2)
    return sock.recv(4096).decode().split("\n")


def test_datagrams_to_a_path_socket():
    with tempfile.TemporaryDirectory() as d, socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        path = os.path.join(d, "notify")
        s.bind(path)
        n = Notifier(path)
        n.ready("started")
        assert _receive(s) == ["READY=1", "STATUS=started"]
        n.reloading()
        lines = _receive(s)
        assert lines[0] == "RELOADING=1" and lines[1].startswith("MONOTONIC_USEC=")
        assert int(lines[1].split("=")[1]) > 0
        n.stopping()
        assert _receive(s)[0] == "STOPPING=1"
        n.close()


def test_abstract_namespace_socket():
    name = f"relay-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind("\0" + name)
        n = Notifier("@" + name)
        n.send("WATCHDOG=1")
        assert _receive(s) == ["WATCHDOG=1"]
        n.close()


def test_a_vanished_socket_is_logged_once_and_never_raised(caplog):
    n = Notifier("/nonexistent/notify.sock")
    n.send("WATCHDOG=1")
    n.send("WATCHDOG=1")
    assert sum("cannot notify systemd" in r.message for r in caplog.records) == 1
    n.close()
