"""Small pure helpers for the templates: ages, percentages, times, the SVG sparkline."""

from __future__ import annotations

from markupsafe import Markup

from ...dispatch.log import iso_ms

SPARK_W, SPARK_H = 120, 24


def age(seconds: float | None) -> str:
    """`42s`, `5m 03s`, `2h 04m`, `3d 2h`; `—` for none."""
    if seconds is None:
        return "—"
    s = int(max(0.0, seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


def pct(rate: float | None) -> str:
    if rate is None:
        return "—"
    value = rate * 100
    return f"{value:.0f}%" if value == int(value) else f"{value:.1f}%"


def when(iso: str | None) -> str:
    """`2026-11-26T05:32:24.123Z` → `2026-11-26 05:32:24Z`."""
    if not iso:
        return "—"
    return iso.replace("T", " ")[:19] + "Z"


def epoch(ts: float | None) -> str:
    """Epoch seconds → `2026-11-26 05:32:24Z`."""
    return when(iso_ms(ts))


def snippet(text: str | None, n: int = 160) -> str:
    if not text:
        return ""
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _points(values: list[int], top: int) -> str:
    step = SPARK_W / max(1, len(values) - 1)
    return " ".join(
        f"{i * step:.1f},{SPARK_H - 1 - (v / top) * (SPARK_H - 2):.1f}"
        for i, v in enumerate(values)
    )


def sparkline(series: dict[str, list[int]]) -> Markup:
    """Delivered (green) and failed (red) per minute over the last hour, as inline SVG.

    Only numbers go into the markup, so it is safe unescaped; presentation attributes (not
    `style=`) keep it inside the CSP.
    """
    delivered = [int(v) for v in series.get("delivered", [])]
    failed = [int(v) for v in series.get("failed", [])]
    top = max([1, *delivered, *failed])
    label = f"last hour: {sum(delivered)} delivered, {sum(failed)} failed"
    return Markup(
        f'<svg class="sparkline" width="{SPARK_W}" height="{SPARK_H}" '
        f'viewBox="0 0 {SPARK_W} {SPARK_H}" role="img" aria-label="{label}">'
        f"<title>{label}</title>"
        f'<polyline class="delivered" fill="none" stroke="#2e8b57" stroke-width="1.5" '
        f'points="{_points(delivered, top)}"/>'
        f'<polyline class="failed" fill="none" stroke="#c0392b" stroke-width="1.5" '
        f'points="{_points(failed, top)}"/>'
        "</svg>"
    )


FILTERS = {
    "age": age,
    "pct": pct,
    "when": when,
    "epoch": epoch,
    "snippet": snippet,
    "sparkline": sparkline,
}
