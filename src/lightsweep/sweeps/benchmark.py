"""Report sections for the two-stage optimizer benchmark (filled in by the benchmark sweeper)."""

from __future__ import annotations


def benchmark_sections(children, folder):
    """No extra sections unless the runs carry benchmark stage tags."""
    return []
