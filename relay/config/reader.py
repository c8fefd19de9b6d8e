"""Typed reading of one TOML table, with errors that name the file and the dotted key.

`Table` hands out values by key and remembers which keys it handed out, so `done()` can
refuse the ones nobody asked for: a typo like `tiemout` is an error, not a silent default.

A bad value does not stop the reading: it is noted in `problems` (shared by every table of
one file) and the default stands in, so one run reports every problem, each with its key
path, as `nginx -t` does. `load` raises one `ConfigError` carrying them all.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


class ConfigError(Exception):
    """Config problems, each already phrased as `file: dotted.key: what is wrong`."""

    def __init__(self, *problems: str) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


def parse_duration(value: object) -> float:
    """Seconds from a number (`30`, `0.5`) or a string (`"250ms"`, `"30s"`, `"5m"`, `"2h"`, `"1d"`)."""
    if isinstance(value, bool):
        raise ValueError('must be a duration such as 30, "30s", "5m", "2h" or "1d"')
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("must not be negative")
        return float(value)
    if isinstance(value, str) and (m := _DURATION.match(value)):
        return float(m.group(1)) * _UNIT_S[m.group(2)]
    raise ValueError('must be a duration such as 30, "30s", "5m", "2h" or "1d"')


def resolve_secret(value: str) -> str:
    """`env:NAME` reads an environment variable, `file:/path` a file; anything else is literal."""
    if value.startswith("env:"):
        name = value[4:]
        if name not in os.environ:
            raise ValueError(f"environment variable {name} is not set")
        return os.environ[name]
    if value.startswith("file:"):
        path = value[5:]
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            raise ValueError(f"cannot read secret file {path}: {exc.strerror}") from None
    return value


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_listen(value: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` → (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError('must be host:port, e.g. "127.0.0.1:8080"')
    return host.strip("[]"), int(port)


class Table:
    """One TOML table being read; `path` is its dotted location (`destinations.crm`)."""

    def __init__(
        self, data: object, path: str, file: str, problems: list[str] | None = None
    ) -> None:
        self.file = file
        self.path = path
        self.problems: list[str] = [] if problems is None else problems
        if not isinstance(data, dict):
            self.problem("must be a table")
            data = {}
        self.data: dict[str, Any] = data
        self._used: set[str] = set()

    def _where(self, message: str, key: str | None) -> str:
        where = ".".join(p for p in (self.path, key) if p)
        return f"{self.file}: {where}: {message}" if where else f"{self.file}: {message}"

    def error(self, message: str, key: str | None = None) -> ConfigError:
        """A problem that stops this part of the file (the caller raises it)."""
        return ConfigError(self._where(message, key))

    def problem(self, message: str, key: str | None = None) -> None:
        """Note a problem and read on."""
        self.problems.append(self._where(message, key))

    def child(self, data: object, path: str) -> Table:
        """A table at `path` that reports into the same problem list."""
        return Table(data, path, self.file, self.problems)

    def has(self, key: str) -> bool:
        return key in self.data

    def raw(self, key: str, default: Any = None) -> Any:
        self._used.add(key)
        return self.data.get(key, default)

    def table(self, key: str) -> Table:
        return self.child(self.raw(key, {}), f"{self.path}.{key}" if self.path else key)

    def _typed(self, key: str, kinds: tuple[type, ...], what: str, default: Any) -> Any:
        value = self.raw(key, default)
        if value is default:
            return value
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            self.problem(f"must be {what}, got {value!r}", key)
            return default
        return value

    def str(self, key: str, default: Any = None) -> Any:
        """A string without control characters: none belongs in a file name, a path, a
        header or a URL, and a CR/LF there would split a line on the wire."""
        value = self._typed(key, (str,), "a string", default)
        if isinstance(value, str) and not self._clean(value, key):
            return default
        return value

    def _clean(self, value: str, key: str) -> bool:
        bad = _CONTROL.search(value)
        if bad:
            self.problem(
                f"must not contain control characters ({bad.group()!r} at {bad.start()})", key
            )
        return bad is None

    def bool(self, key: str, default: bool = False) -> bool:
        return self._typed(key, (bool,), "true or false", default)

    def int(self, key: str, default: int, low: int = 0, high: int | None = None) -> int:
        value = self._typed(key, (int,), "an integer", default)
        if value < low or (high is not None and value > high):
            bound = f"between {low} and {high}" if high is not None else f"at least {low}"
            self.problem(f"must be {bound}, got {value}", key)
            return default
        return value

    def float(self, key: str, default: float, low: float = 0.0) -> float:
        value = float(self._typed(key, (int, float), "a number", default))
        if value < low:
            self.problem(f"must be at least {low}, got {value}", key)
            return default
        return value

    def choice(self, key: str, choices: Iterable[str], default: str, fold: bool = True) -> str:
        """One of `choices`; compared case-insensitively when `fold` (`"post"` is `"POST"`)."""
        legal = list(choices)
        value = self.str(key, default)
        by_fold = {c.lower(): c for c in legal} if fold else {c: c for c in legal}
        found = by_fold.get(value.lower() if fold else value)
        if found is None:
            self.problem(f"{value!r} is not one of {', '.join(legal)}", key)
            return default
        return found

    def duration(self, key: str, default: float | str) -> float:
        value = self.raw(key, default)
        try:
            return parse_duration(value)
        except ValueError as exc:
            self.problem(f"{exc}, got {value!r}", key)
            return parse_duration(default)

    def int_list(
        self, key: str, default: Iterable[int], low: int = 0, high: int | None = None
    ) -> tuple[int, ...]:
        """A list of integers, each within bounds (`reject = [410]`)."""
        value = self._typed(key, (list,), "a list of integers", list(default))
        for i, item in enumerate(value):
            bad = isinstance(item, bool) or not isinstance(item, int)
            if bad or item < low or (high is not None and item > high):
                bound = f"between {low} and {high}" if high is not None else f"at least {low}"
                self.problem(f"must be integers {bound}, got {item!r}", f"{key}[{i}]")
                return tuple(default)
        return tuple(value)

    def str_list(self, key: str, default: Iterable[str] = ()) -> tuple[str, ...]:
        value = self.raw(key, list(default))
        if isinstance(value, str):
            if not self._clean(value, key):
                return tuple(default)
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.problem("must be a list of strings", key)
            return tuple(default)
        if not all([self._clean(v, f"{key}[{i}]") for i, v in enumerate(value)]):
            return tuple(default)
        return tuple(value)

    def secret(self, key: str, default: Any = None) -> Any:
        value = self.str(key, default)
        return None if value is None else self.resolve(value, key)

    def secrets(self, key: str) -> tuple[str, ...]:
        return tuple(self.resolve(v, f"{key}[{i}]") for i, v in enumerate(self.str_list(key)))

    def resolve(self, value: str, key: str) -> str:
        try:
            resolved = resolve_secret(value)
        except ValueError as exc:
            self.problem(str(exc), key)
            return value
        if not resolved:
            self.problem("must not be empty", key)
        self._clean(resolved, key)  # an env: or file: secret too
        return resolved

    def done(self) -> None:
        for key in sorted(set(self.data) - self._used):
            self.problem(f"unknown key (known: {', '.join(sorted(self._used))})", key)
