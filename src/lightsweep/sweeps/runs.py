"""A sweep's child runs as the reports see them, and the pure helpers that aggregate and tabulate them.

Shared by `report` (the comparison report) and `benchmark` (its optimizer-benchmark sections), so
that neither has to import the other to reach them.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field


@dataclass
class ChildRun:
    run_id: str
    name: str
    label: str
    status: str
    diverged: bool
    seconds: float | None
    tags: dict
    params: dict
    metrics: dict
    curves: dict[str, dict[int, float]] = field(default_factory=dict)
    # seconds from run start to each epoch's val/acc point
    val_acc_seconds: dict[int, float] = field(default_factory=dict)

    @property
    def lr(self) -> float | None:
        value = self.params.get("optimizer.lr")
        return float(value) if value not in (None, "null") else None

    def final(self, key: str) -> float:
        curve = self.curves.get(key) or {}
        return curve[max(curve)] if curve else math.nan


def mean_std(values) -> tuple[float, float, int]:
    """Mean, population std and count of the finite values (None and NaN are skipped); NaN, NaN, 0 if none."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return math.nan, math.nan, 0
    return statistics.fmean(finite), statistics.pstdev(finite) if len(finite) > 1 else 0.0, len(finite)


def format_mean_std(values, digits: int = 4) -> str:
    """`mean ± std` of the finite values; a single value alone (a std of one seed says nothing), `–` for none."""
    mean, std, n = mean_std(values)
    if n == 0:
        return "–"
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if n > 1 else f"{mean:.{digits}f}"


def descending(value: float) -> float:
    """Sort key: highest first, NaN/inf (nothing finite to rank by: diverged, failed, untested) last."""
    return -value if math.isfinite(value) else math.inf


def markdown_table(rows: list[dict[str, str]]) -> str:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row.get(c, "") for c in columns) + " |" for row in rows]
    return "\n".join(lines)
