"""Events → destination names, compiled once from the config's `[[routes]]` (pure)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ..config import Destination, Route
from .events import EVENT_TYPES


class Router:
    """Which destinations an event goes to, and when each delivery is first due."""

    def __init__(self, routes: Iterable[Route], destinations: Mapping[str, Destination]) -> None:
        self._delay_s = {name: d.delay_s for name, d in destinations.items()}
        # Routes without a `match` filter are merged per event type ahead of time, so the
        # common case is one dict lookup; filtered routes are checked per event.
        plain: dict[str, list[str]] = {t: [] for t in EVENT_TYPES}
        self._filtered: dict[str, list[Route]] = {t: [] for t in EVENT_TYPES}
        for route in routes:
            for etype in route.event_types:
                if route.match:
                    self._filtered[etype].append(route)
                else:
                    plain[etype].extend(d for d in route.destinations if d not in plain[etype])
        self._plain = {t: tuple(names) for t, names in plain.items()}
        self._plain_delays = {
            t: tuple((d, self._delay_s[d]) for d in names) for t, names in self._plain.items()
        }

    def destinations_for(self, event: Mapping) -> tuple[str, ...]:
        etype = event["event_type"]
        names = self._plain[etype]
        filtered = self._filtered[etype]
        if not filtered:
            return names
        extra = [
            d
            for route in filtered
            if all(str(event.get(key)) in allowed for key, allowed in route.match)
            for d in route.destinations
        ]
        return tuple(dict.fromkeys((*names, *extra)))

    def deliveries_for(self, event: Mapping, received_at: float) -> tuple[tuple[str, float], ...]:
        """(destination, due_at) pairs: first attempt at event_time + delay.

        An event_time in the future (a skewed clock) counts as the time it was received.
        event_time has whole seconds (its default is the receipt time rounded down), so one
        within the second before receipt also counts as receipt: a delay is never cut short.
        """
        event_time = float(event.get("event_time", received_at))
        start = received_at if event_time > received_at - 1 else event_time
        etype = event["event_type"]
        if not self._filtered[etype]:  # the hot path: no per-event filters to check
            return tuple([(d, start + delay) for d, delay in self._plain_delays[etype]])
        return tuple([(d, start + self._delay_s[d]) for d in self.destinations_for(event)])
