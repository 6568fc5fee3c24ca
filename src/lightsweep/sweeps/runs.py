"""A sweep's child runs as the reports see them (two DataFrames), and the helpers that aggregate and tabulate them.

`runs`: one row per child run, columns RUN_COLUMNS. `curves`: one row per run, metric and epoch (the last
value logged for that epoch), columns CURVE_COLUMNS, `seconds` counted from the run's start.
Shared by `report` (the comparison report) and `benchmark` (its optimizer-benchmark sections), so
that neither has to import the other to reach them.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import pandas as pd

RUN_COLUMNS = (
    "run_id",
    "name",
    "label",
    "status",
    "diverged",
    "seconds",
    "test_acc",
    "lr",
    "optimizer",
    "stage",
    "pruned",
)
CURVE_COLUMNS = ("run_id", "key", "epoch", "value", "seconds")


class Section(NamedTuple):
    """A part of the report: a heading, a paragraph, a table and the figures under it (name -> Figure)."""

    title: str
    text: str
    table: pd.DataFrame
    figures: dict


def last_values(runs: pd.DataFrame, curves: pd.DataFrame, key: str) -> pd.Series:
    """Each run's `key` at its last epoch (NaN: never logged), aligned with `runs`."""
    points = curves[curves["key"] == key].sort_values("epoch", kind="stable")
    return runs["run_id"].map(points.drop_duplicates("run_id", keep="last").set_index("run_id")["value"]).astype(float)


def mean_std(values) -> tuple[float, float, int]:
    """Mean, population std and count of the finite values (None and NaN are skipped); NaN, NaN, 0 if none."""
    finite = pd.Series(values, dtype=float).replace([math.inf, -math.inf], math.nan).dropna()
    return finite.mean(), finite.std(ddof=0), len(finite)


def format_mean_std(values, digits: int = 4) -> str:
    """`mean ± std` of the finite values; a single value alone (a std of one seed says nothing), `–` for none."""
    mean, std, n = mean_std(values)
    if n == 0:
        return "–"
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if n > 1 else f"{mean:.{digits}f}"


def format_value(value, digits: int = 4) -> str:
    """One number, `–` where there is none (missing or not finite)."""
    return f"{value:.{digits}f}" if value is not None and math.isfinite(value) else "–"


def ranked(table: pd.DataFrame, score) -> pd.DataFrame:
    """Rows by `score` (a column aligned with them), highest first; NaN/inf (nothing finite to rank by:
    diverged, failed, untested) last; ties keep their order."""
    score = pd.Series(score, index=table.index, dtype=float).replace([math.inf, -math.inf], math.nan)
    return table.loc[score.sort_values(ascending=False, na_position="last", kind="stable").index]


def markdown_table(table: pd.DataFrame) -> str:
    """A pipe table of the cells as they are (missing cells empty); `(none)` without rows."""
    if table.empty:
        return "(none)"
    cells = table.astype(object).fillna("").astype(str)
    lines = ["| " + " | ".join(map(str, table.columns)) + " |", "|" + "---|" * len(table.columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells.itertuples(index=False)])
