"""AlgoPerf's scoring (lightsweep.sweeps.scoring) against a performance profile computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from lightsweep.sweeps import scoring

INF = math.inf
# Three algorithms, four workloads, two studies of two trials: each trial's time to target (inf: never).
TRIALS = {
    ("w1", "A"): [[10, 12], [14, INF]],  # studies' best 10, 14: median 12
    ("w1", "B"): [[20, 30], [18, 25]],  # 20, 18: 19
    ("w1", "C"): [[INF, INF], [9, INF]],  # inf, 9: inf (inf counts in the median)
    ("w2", "A"): [[40, 50], [44, 60]],  # 42
    ("w2", "B"): [[21, INF], [21, 30]],  # 21
    ("w2", "C"): [[84, 90], [84, 100]],  # 84
    ("w3", "A"): [[INF, INF], [INF, INF]],  # nobody reaches w3's target
    ("w3", "B"): [[INF, INF], [INF, INF]],
    ("w3", "C"): [[INF, INF], [INF, INF]],
    ("w4", "A"): [[5, 5], [5, 5]],  # 5
    ("w4", "B"): [[15, 16], [15, 20]],  # 15
    ("w4", "C"): [[INF, INF], [INF, INF]],
}
# By hand: ratios to each workload's fastest (A: 12, 21, -, 5).
RATIOS = {"A": [1, 2, INF, 1], "B": [19 / 12, 1, INF, 3], "C": [INF, 4, INF, INF]}
# Benchmark score: the mean over workloads of max(0, 4 - r) / 3.
SCORES = {"A": (1 + 2 / 3 + 0 + 1) / 4, "B": (29 / 36 + 1 + 0 + 1 / 3) / 4, "C": 0.0}
# Each study alone. Study 0: w1 A 10, B 20; w2 A 40, B 21, C 84; w4 A 5, B 15. Study 1: w1 A 14, B 18, C 9;
# w2 A 44, B 21, C 84; w4 as study 0.
STUDY_SCORES = {
    0: {"A": (1 + (4 - 40 / 21) / 3 + 0 + 1) / 4, "B": (2 / 3 + 1 + 0 + 1 / 3) / 4, "C": 0.0},
    1: {"A": ((4 - 14 / 9) / 3 + (4 - 44 / 21) / 3 + 0 + 1) / 4, "B": (2 / 3 + 1 + 0 + 1 / 3) / 4, "C": 1 / 4},
}


@pytest.fixture
def trials() -> pd.DataFrame:
    rows = [
        {"workload": w, "algorithm": a, "study": s, "trial": t, "time": float(time)}
        for (w, a), studies in TRIALS.items()
        for s, times in enumerate(studies)
        for t, time in enumerate(times)
    ]
    return pd.DataFrame(rows)


def ratios_of(trials):
    return scoring.performance_ratios(scoring.workload_times(scoring.study_times(trials)))


def test_per_workload_time_is_the_median_of_the_studies_fastest_trials(trials):
    times = scoring.workload_times(scoring.study_times(trials))
    assert times.loc["A"].tolist() == [12, 42, INF, 5]
    assert times.loc["B"].tolist() == [19, 21, INF, 15]
    assert times.loc["C"].tolist() == [INF, 84, INF, INF]


def test_ratios_to_the_fastest_and_inf_where_no_one_reached(trials):
    ratios = ratios_of(trials)
    for algorithm, expected in RATIOS.items():
        assert ratios.loc[algorithm].tolist() == pytest.approx(expected), algorithm


def test_the_performance_profile_counts_workloads_within_tau(trials):
    profile = scoring.performance_profile(ratios_of(trials), [1.0, 1.5, 19 / 12, 2.0, 3.0, 4.0])
    assert profile.loc["A"].tolist() == [0.5, 0.5, 0.5, 0.75, 0.75, 0.75]
    assert profile.loc["B"].tolist() == [0.25, 0.25, 0.5, 0.5, 0.75, 0.75]
    assert profile.loc["C"].tolist() == [0, 0, 0, 0, 0, 0.25]


def test_benchmark_score_is_the_profiles_normalised_area_up_to_4(trials):
    ratios = ratios_of(trials)
    scores = scoring.benchmark_scores(ratios)
    for algorithm, expected in SCORES.items():
        assert scores[algorithm] == pytest.approx(expected, abs=1e-12), algorithm
    # AlgoPerf's code: the profile at 100 points of [1, 4], integrated with the trapezoidal rule.
    taus = np.linspace(1.0, 4.0, 100)
    trapezoid = np.trapezoid(scoring.performance_profile(ratios, taus).to_numpy(), taus, axis=1) / 3
    assert trapezoid == pytest.approx(scores.to_numpy(), abs=0.02)


def test_each_study_scored_on_its_own(trials):
    scores = scoring.study_scores(scoring.study_times(trials))
    for study, expected in STUDY_SCORES.items():
        for algorithm, value in expected.items():
            assert scores.loc[algorithm, study] == pytest.approx(value, abs=1e-12), (study, algorithm)
