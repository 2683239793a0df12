"""A key's usage as a server-rendered SVG bar chart (no JavaScript, no build step).

``chart`` turns a ``Series`` into bar geometry the template draws: one bar per bucket,
its 429s and other 4xx stacked on top of its successes, scaled to the busiest bucket.
"""

from __future__ import annotations

from dataclasses import dataclass

from keyrack.domain.usage import RATE_LIMITED, REQUESTS, SUCCESSES, quantile_ms
from keyrack.services.key_usage import Series

WIDTH, HEIGHT = 720, 160


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    width: float
    ok: tuple[float, float]
    """(y, height) of the successes."""
    limited: tuple[float, float]
    refused: tuple[float, float]
    label: str


@dataclass(frozen=True, slots=True)
class Chart:
    width: int
    height: int
    peak: int
    bars: list[Bar]
    requests: int
    successes: int
    rate_limited: int
    refused: int
    p50_ms: int | None
    p99_ms: int | None
    first: str
    last: str


def chart(series: Series) -> Chart:
    points = series.points
    peak = max((p.counts[REQUESTS] for p in points), default=0)
    step = WIDTH / max(1, len(points))
    scale = HEIGHT / peak if peak else 0.0
    bars = []
    for i, point in enumerate(points):
        ok = point.counts[SUCCESSES] * scale
        limited = point.counts[RATE_LIMITED] * scale
        refused = (
            point.counts[REQUESTS] - point.counts[SUCCESSES] - point.counts[RATE_LIMITED]
        ) * scale
        bottom = float(HEIGHT)
        stacked = []
        for height in (ok, limited, refused):
            bottom -= height
            stacked.append((round(bottom, 2), round(height, 2)))
        bars.append(
            Bar(
                x=round(i * step, 2),
                width=round(max(1.0, step * 0.8), 2),
                ok=stacked[0],
                limited=stacked[1],
                refused=stacked[2],
                label=f"{point.start:%Y-%m-%d %H:%M} UTC: {point.counts[REQUESTS]} requests, "
                f"{point.counts[RATE_LIMITED]} rate-limited",
            )
        )
    total = series.total
    histogram = total.histogram
    return Chart(
        width=WIDTH,
        height=HEIGHT,
        peak=peak,
        bars=bars,
        requests=total.counts[REQUESTS],
        successes=total.counts[SUCCESSES],
        rate_limited=total.counts[RATE_LIMITED],
        refused=total.counts[REQUESTS] - total.counts[SUCCESSES] - total.counts[RATE_LIMITED],
        p50_ms=quantile_ms(histogram, 0.5),
        p99_ms=quantile_ms(histogram, 0.99),
        first=f"{series.start:%Y-%m-%d %H:%M}",
        last=f"{series.end:%Y-%m-%d %H:%M}",
    )
