"""Summaries over repetitions (min / median / max), percentiles, and the printed tables."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty sample; NaN for an empty one."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass(frozen=True)
class Summary:
    """min / median / max of one figure over the repetitions."""

    low: float
    median: float
    high: float
    count: int

    @classmethod
    def of(cls, values: Iterable[float]) -> Summary:
        kept = [v for v in values if v is not None and not math.isnan(v)]
        if not kept:
            return cls(math.nan, math.nan, math.nan, 0)
        return cls(min(kept), statistics.median(kept), max(kept), len(kept))


def number(value: float, digits: int | None = None) -> str:
    """A compact rendering: fewer decimals for bigger numbers."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if digits is None:
        magnitude = abs(value)
        digits = 0 if magnitude >= 100 else 1 if magnitude >= 10 else 2 if magnitude >= 1 else 3
    return f"{value:.{digits}f}"


def cell(values: Iterable[float], digits: int | None = None) -> str:
    """`median [min-max]` over the repetitions (just the value when there is one)."""
    summary = Summary.of(values)
    if summary.count == 0:
        return "n/a"
    if summary.count == 1:
        return number(summary.median, digits)
    return (
        f"{number(summary.median, digits)} "
        f"[{number(summary.low, digits)}-{number(summary.high, digits)}]"
    )


@dataclass
class Table:
    """A titled table of text cells, printed as Markdown; notes follow it."""

    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *cells: Any) -> None:
        self.rows.append([str(c) for c in cells])

    def render(self) -> str:
        widths = [len(c) for c in self.columns]
        for row in self.rows:
            for i, text in enumerate(row):
                widths[i] = max(widths[i], len(text))

        def line(cells: Sequence[str]) -> str:
            return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

        out = [f"### {self.title}", "", line(self.columns)]
        out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        out.extend(line(row) for row in self.rows)
        if self.notes:
            out.append("")
            out.extend(f"- {note}" for note in self.notes)
        return "\n".join(out) + "\n"


def dump_json(path: str, tables: list[Table], raw: dict[str, Any]) -> None:
    """Write the tables and the raw per-repetition values, for later comparison."""
    with open(path, "w") as handle:
        json.dump(
            {"tables": [t.__dict__ for t in tables], "raw": raw}, handle, indent=1, default=str
        )
