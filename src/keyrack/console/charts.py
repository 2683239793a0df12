"""Server-rendered SVG charts (no script, no build step; colours come from console.css)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from markupsafe import Markup, escape

from keyrack.domain.usage import RATE_LIMITED, REQUESTS, SUCCESSES, quantile_ms
from keyrack.services.key_usage import Series

WIDTH, HEIGHT = 720, 180
LEFT, BOTTOM, TOP = 40, 22, 10
SERIES = ("synced", "skipped", "failed")


@dataclass(frozen=True, slots=True)
class RunBar:
    """One run's totals over its record types and directions."""

    ref: str
    label: str
    status: str
    synced: int
    skipped: int
    failed: int

    @classmethod
    def of(cls, ref: str, label: str, status: str, counts: dict[str, Any]) -> RunBar:
        totals = dict.fromkeys(SERIES, 0)
        for ways in counts.values():
            for tally in ways.values():
                for name in SERIES:
                    totals[name] += int(tally.get(name, 0))
        return cls(ref, label, status, **totals)


@dataclass(frozen=True, slots=True)
class Column:
    """One bar: ``values`` stacked bottom-up in the order of the chart's series; ``mark``
    is the class of a thin mark drawn when they are all zero; ``title`` its tooltip."""

    label: str
    title: str
    values: tuple[int, ...]
    mark: str | None = None


def runs_chart(bars: Sequence[RunBar], *, title: str) -> Markup:
    """Stacked bars (synced / skipped / failed) per run, oldest on the left."""
    columns = [
        Column(
            bar.label,
            f"{bar.ref} ({bar.status}, {bar.label}): "
            f"{bar.synced} synced, {bar.skipped} skipped, {bar.failed} failed",
            (bar.synced, bar.skipped, bar.failed),
            "run-failed" if bar.status == "failed" else "series-none",
        )
        for bar in bars
    ]
    return stacked_bars(columns, SERIES, title=title, unit="runs")


def stacked_bars(
    columns: Sequence[Column], series: Sequence[str], *, title: str, unit: str
) -> Markup:
    """An SVG of stacked bars, one per column, each series drawn with the class
    ``series-<name>``; every text in it is escaped."""
    top = max((sum(c.values) for c in columns), default=0) or 1
    plot_w, plot_h = WIDTH - LEFT - 8, HEIGHT - BOTTOM - TOP
    slot = plot_w / max(len(columns), 1)
    bar_w = max(min(slot * 0.7, 28.0), 1.0)
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-labelledby="chart-title chart-desc" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="chart-title">{escape(title)}</title>',
        f'<desc id="chart-desc">{len(columns)} {escape(unit)}; the tallest: {top}.</desc>',
        f'<line class="axis" x1="{LEFT}" y1="{TOP + plot_h}" x2="{WIDTH - 8}" '
        f'y2="{TOP + plot_h}"/>',
        f'<text class="tick" x="{LEFT - 4}" y="{TOP + 8}" text-anchor="end">{top}</text>',
        f'<text class="tick" x="{LEFT - 4}" y="{TOP + plot_h}" text-anchor="end">0</text>',
    ]
    for index, column in enumerate(columns):
        x = LEFT + index * slot + (slot - bar_w) / 2
        y = float(TOP + plot_h)
        parts.append(f'<g class="bar"><title>{escape(column.title)}</title>')
        for name, value in zip(series, column.values, strict=True):
            if not value:
                continue
            h = value / top * plot_h
            y -= h
            parts.append(
                f'<rect class="series-{name}" x="{x:.1f}" y="{y:.1f}" '
                f'width="{bar_w:.1f}" height="{h:.1f}"/>'
            )
        if not any(column.values) and column.mark is not None:
            parts.append(
                f'<rect class="{column.mark}" x="{x:.1f}" y="{TOP + plot_h - 4}" '
                f'width="{bar_w:.1f}" height="4"/>'
            )
        parts.append("</g>")
    if columns:
        parts.append(
            f'<text class="tick" x="{LEFT}" y="{HEIGHT - 6}">{escape(columns[0].label)}</text>'
        )
        parts.append(
            f'<text class="tick" x="{WIDTH - 8}" y="{HEIGHT - 6}" text-anchor="end">'
            f"{escape(columns[-1].label)}</text>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 (every text in it went through escape)


USAGE_SERIES = ("succeeded", "rate-limited", "refused")


@dataclass(frozen=True, slots=True)
class UsageChart:
    """A key's usage: the SVG, and the totals its caption states."""

    svg: Markup
    requests: int
    successes: int
    rate_limited: int
    refused: int
    p50_ms: int | None
    p99_ms: int | None


def usage_chart(found: Series) -> UsageChart:
    """One bar per bucket: successes, 429s and other refusals stacked."""

    def split(counts: Any) -> tuple[int, int, int]:
        ok, limited = counts[SUCCESSES], counts[RATE_LIMITED]
        return ok, limited, counts[REQUESTS] - ok - limited

    columns = [
        Column(
            f"{point.start:%Y-%m-%d %H:%M}",
            f"{point.start:%Y-%m-%d %H:%M} UTC: {point.counts[REQUESTS]} requests, "
            f"{point.counts[RATE_LIMITED]} rate-limited",
            split(point.counts),
        )
        for point in found.points
    ]
    title = f"Requests per {found.granularity}, {found.start:%Y-%m-%d %H:%M} to {found.end:%Y-%m-%d %H:%M} UTC"
    ok, limited, refused = split(found.total.counts)
    histogram = found.total.histogram
    return UsageChart(
        stacked_bars(columns, USAGE_SERIES, title=title, unit=f"{found.granularity}s"),
        found.total.counts[REQUESTS],
        ok,
        limited,
        refused,
        quantile_ms(histogram, 0.5),
        quantile_ms(histogram, 0.99),
    )
