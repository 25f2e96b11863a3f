"""The benchmark table: rows, text and markdown rendering, and a PNG chart of throughput."""

from __future__ import annotations

import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

SCENARIOS = (
    "buffered views end to end",
    "buffered record_view call",
    "per-view task drain",
    "metrics and JSON logs overhead",
    "bulk deactivation",
    "child RSS growth",
)


@dataclass(frozen=True)
class Row:
    """One scenario: our figure, the baseline measured in the same run, and the verdict."""

    scenario: str
    ours: str
    baseline: str
    ratio: float | None
    target: str
    passed: bool
    # Throughput (operations per second) of ours and of the baseline, for the chart.
    ours_rate: float | None = None
    baseline_rate: float | None = None
    rate_unit: str = ""
    note: str = ""

    @classmethod
    def of_rates(
        cls, scenario: str, rates: tuple[float, float], unit: str, ratio: float, target: str,
        passed: bool, note: str,
    ) -> Row:  # fmt: skip
        """A throughput row: ours and the baseline's rate, shown in `unit` and charted."""
        ours, baseline = rates
        shown = (number(ours, unit), number(baseline, unit))
        return cls(scenario, *shown, ratio, target, passed, ours, baseline, unit, note)

    @property
    def ratio_text(self) -> str:
        return "-" if self.ratio is None else f"{self.ratio:.3g}x"

    @property
    def result(self) -> str:
        return "pass" if self.passed else "MISS"


def progress(message: str) -> None:
    """A line on stderr while a scenario runs; the table goes to stdout."""
    print(f"  {message}", file=sys.stderr, flush=True)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def number(value: float, unit: str) -> str:
    """A figure with thousands separators and its unit, e.g. `123,456 views/s`."""
    shown = f"{value:,.0f}" if value >= 100 else f"{value:,.2f}"
    return f"{shown} {unit}"


_HEADER = ("scenario", "ours", "baseline", "ratio", "target", "result")


def _cells(row: Row) -> tuple[str, ...]:
    return (row.scenario, row.ours, row.baseline, row.ratio_text, row.target, row.result)


def text_table(rows: Sequence[Row]) -> str:
    """The table as aligned plain text."""
    lines = [_HEADER, *(_cells(row) for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(_HEADER))]

    def render(line: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([render(lines[0]), rule, *(render(line) for line in lines[1:])])


def markdown_table(rows: Sequence[Row]) -> str:
    """The table as GitHub markdown."""
    lines = ["| " + " | ".join(_HEADER) + " |", "|" + "---|" * len(_HEADER)]
    lines += ["| " + " | ".join(_cells(row)) + " |" for row in rows]
    return "\n".join(lines)


def notes(rows: Sequence[Row]) -> str:
    return "\n".join(f"- {row.scenario}: {row.note}" for row in rows if row.note)


def chart(rows: Sequence[Row], path: Path, title: str) -> None:
    """Bar chart of ours vs baseline throughput, one panel per scenario (units differ)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    charted = [row for row in rows if row.ours_rate is not None]
    figure, axes = plt.subplots(1, len(charted), figsize=(3.4 * len(charted), 4), squeeze=False)
    for axis, row in zip(axes[0], charted, strict=True):
        labels, values, colours = ["ours"], [row.ours_rate or 0.0], ["tab:blue"]
        if row.baseline_rate is not None:
            labels.append("baseline")
            values.append(row.baseline_rate)
            colours.append("tab:gray")
        bars = axis.bar(labels, values, color=colours)
        axis.bar_label(bars, labels=[f"{v:,.0f}" for v in values], fontsize=8)
        axis.set_title(f"{row.scenario}\n{row.ratio_text} ({row.target}) {row.result}", fontsize=9)
        axis.set_ylabel(row.rate_unit)
        axis.ticklabel_format(axis="y", style="plain")
        axis.tick_params(axis="y", labelsize=7)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
