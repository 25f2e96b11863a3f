"""Small SVG charts drawn on the server: a trend at a glance, with no JavaScript."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from markupsafe import Markup, escape


@dataclass(frozen=True)
class Series:
    """One stacked part of each bar: its name, CSS class and one value per bar."""

    name: str
    css_class: str
    values: Sequence[int]


def stacked_bars(
    labels: Sequence[str], series: Sequence[Series], *, width: int = 720, height: int = 140
) -> Markup:
    """Bars of `series` stacked per label, scaled to the highest bar; each bar's title says
    its label and values. Every text in it is escaped."""
    count = len(labels)
    totals = [sum(each.values[i] for each in series) for i in range(count)]
    peak = max(totals, default=0) or 1
    plot = height - 18
    step = width / max(count, 1)
    bar = max(step - 2, 1)
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="{escape(", ".join(each.name for each in series))} per bar">',
        f'<line class="axis" x1="0" y1="{plot}" x2="{width}" y2="{plot}"/>',
        f'<text class="scale" x="2" y="10">{peak}</text>',
    ]
    for i, label in enumerate(labels):
        x, base = i * step, float(plot)
        summary = ", ".join(f"{each.values[i]} {each.name}" for each in series)
        parts.append(f"<g><title>{escape(label)}: {escape(summary)}</title>")
        parts.append(f'<rect class="slot" x="{x:.1f}" y="0" width="{bar:.1f}" height="{plot}"/>')
        for each in series:
            value = each.values[i]
            if not value:
                continue
            tall = value / peak * (plot - 12)
            base -= tall
            parts.append(
                f'<rect class="{escape(each.css_class)}" x="{x:.1f}" y="{base:.1f}" '
                f'width="{bar:.1f}" height="{tall:.1f}"/>'
            )
        parts.append("</g>")
    if labels:
        parts.append(f'<text class="scale" x="0" y="{height - 4}">{escape(labels[0])}</text>')
        parts.append(
            f'<text class="scale" x="{width}" y="{height - 4}" text-anchor="end">'
            f"{escape(labels[-1])}</text>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - built from numbers and escaped text only


class Minute(Protocol):
    @property
    def start(self) -> datetime: ...
    @property
    def applied(self) -> int: ...
    @property
    def dead_lettered(self) -> int: ...


def throughput_chart(minutes: Sequence[Minute]) -> Markup:
    """Tasks applied and dead-lettered per minute (UTC), stacked."""
    labels = [minute.start.astimezone(UTC).strftime("%H:%M") for minute in minutes]
    applied = Series("applied", "applied", [minute.applied for minute in minutes])
    dead = Series("dead-lettered", "dead", [minute.dead_lettered for minute in minutes])
    return stacked_bars(labels, [applied, dead])
