"""MLCommons AlgoPerf's scoring of training algorithms over workloads, on pandas tables.

Read from AlgoPerf's rules (docs/DOCUMENTATION.md, "Scoring") and its code (scoring/performance_profile.py):

- A trial's time is its time to reach the workload's validation target (inf when it never does).
- A study's time on a workload is its fastest trial's; an algorithm's time on a workload is the median of
  its studies' times (inf counts in the median).
- Performance ratio r[a, w] = time[a, w] / min over algorithms of time[., w] (inf: not reached, or no
  algorithm reached the target on that workload).
- Performance profile rho_a(tau) = (number of workloads with r[a, w] <= tau) / (number of workloads).
- Benchmark score B_a = 1 / (r_max - 1) * integral of rho_a(tau) from 1 to r_max, r_max = 4: in [0, 1], 1 for
  the fastest algorithm on every workload, 0 where it needs more than r_max times the best time.

The integral of the step function is computed exactly, B_a = mean over workloads of
max(0, r_max - r[a, w]) / (r_max - 1); AlgoPerf's code integrates the profile sampled at 100 points of
[1, 4] with the trapezoidal rule, which differs from it by at most ~1/100 per workload.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

R_MAX = 4.0  # AlgoPerf: no credit beyond four times the fastest algorithm's time


def study_times(trials: pd.DataFrame) -> pd.DataFrame:
    """Each (workload, algorithm, study)'s time: its fastest trial's (`time` column, inf where not reached)."""
    return trials.groupby(["workload", "algorithm", "study"], sort=False)["time"].min().reset_index()


def workload_times(studies: pd.DataFrame) -> pd.DataFrame:
    """Algorithms x workloads: the median over studies of the study times (inf counts)."""
    return studies.pivot_table(index="algorithm", columns="workload", values="time", aggfunc="median", sort=False)


def performance_ratios(times: pd.DataFrame) -> pd.DataFrame:
    """Algorithms x workloads: each time over the workload's fastest; inf where the target was not reached
    (by this algorithm, or by any: then no algorithm gets credit there)."""
    times = times.astype(float)
    best = times.min(axis=0)
    ratios = times.div(best.where(np.isfinite(best)), axis=1)
    return ratios.where(np.isfinite(times) & ratios.notna(), np.inf)


def performance_profile(ratios: pd.DataFrame, taus) -> pd.DataFrame:
    """Algorithms x taus: the fraction of workloads on which the algorithm is within tau of the fastest."""
    taus = np.asarray(taus, dtype=float)
    within = ratios.to_numpy()[:, :, None] <= taus[None, None, :]
    return pd.DataFrame(within.mean(axis=1), index=ratios.index, columns=taus)


def benchmark_scores(ratios: pd.DataFrame, r_max: float = R_MAX) -> pd.Series:
    """Each algorithm's benchmark score: its profile's normalised area from tau = 1 to r_max (exact)."""
    credit = ((r_max - ratios) / (r_max - 1)).clip(lower=0.0, upper=1.0)
    return credit.fillna(0.0).mean(axis=1).rename("score")


def study_scores(studies: pd.DataFrame, r_max: float = R_MAX) -> pd.DataFrame:
    """Algorithms x studies: the benchmark score of each study on its own (study j's times of every
    algorithm on every workload): how much the score moves with the tuning draws."""
    scores = {
        study: benchmark_scores(performance_ratios(workload_times(part)), r_max)
        for study, part in studies.groupby("study", sort=True)
    }
    return pd.DataFrame(scores)
