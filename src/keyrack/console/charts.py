"""Server-rendered SVG charts (no script, no build step; colours come from console.css)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from markupsafe import Markup, escape

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


def runs_chart(bars: Sequence[RunBar], *, title: str) -> Markup:
    """Stacked bars (synced / skipped / failed) per run, oldest on the left; each bar's
    ``<title>`` names the run and its figures."""
    top = max((b.synced + b.skipped + b.failed for b in bars), default=0) or 1
    plot_w, plot_h = WIDTH - LEFT - 8, HEIGHT - BOTTOM - TOP
    slot = plot_w / max(len(bars), 1)
    bar_w = max(min(slot * 0.7, 28.0), 1.0)
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-labelledby="chart-title chart-desc" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="chart-title">{escape(title)}</title>',
        f'<desc id="chart-desc">{len(bars)} runs; most records in one run: {top}.</desc>',
        f'<line class="axis" x1="{LEFT}" y1="{TOP + plot_h}" x2="{WIDTH - 8}" '
        f'y2="{TOP + plot_h}"/>',
        f'<text class="tick" x="{LEFT - 4}" y="{TOP + 8}" text-anchor="end">{top}</text>',
        f'<text class="tick" x="{LEFT - 4}" y="{TOP + plot_h}" text-anchor="end">0</text>',
    ]
    for index, bar in enumerate(bars):
        x = LEFT + index * slot + (slot - bar_w) / 2
        y = float(TOP + plot_h)
        parts.append('<g class="bar">')
        parts.append(
            f"<title>{escape(bar.ref)} ({escape(bar.status)}, {escape(bar.label)}): "
            f"{bar.synced} synced, {bar.skipped} skipped, {bar.failed} failed</title>"
        )
        for name in SERIES:
            value = getattr(bar, name)
            if not value:
                continue
            h = value / top * plot_h
            y -= h
            parts.append(
                f'<rect class="series-{name}" x="{x:.1f}" y="{y:.1f}" '
                f'width="{bar_w:.1f}" height="{h:.1f}"/>'
            )
        if bar.synced + bar.skipped + bar.failed == 0:  # a run that touched no record
            mark = "run-failed" if bar.status == "failed" else "series-none"
            parts.append(
                f'<rect class="{mark}" x="{x:.1f}" y="{TOP + plot_h - 4}" '
                f'width="{bar_w:.1f}" height="4"/>'
            )
        parts.append("</g>")
    if bars:
        parts.append(
            f'<text class="tick" x="{LEFT}" y="{HEIGHT - 6}">{escape(bars[0].label)}</text>'
        )
        parts.append(
            f'<text class="tick" x="{WIDTH - 8}" y="{HEIGHT - 6}" text-anchor="end">'
            f"{escape(bars[-1].label)}</text>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 (every text in it went through escape)
