"""Hydra command-line overrides as strings: their keys, and which ones a sweep varies."""

from __future__ import annotations


def override_key(override: str) -> str:
    """`+optimizer.lr=0.1` -> `optimizer.lr`."""
    return override.split("=", 1)[0].lstrip("+~")


def swept_keys(overrides: list[str], searched: dict | None = None) -> list[str]:
    """Keys a sweep varies: `optimizer=sgd,adam`, `seed=range(1,4)`, and a sweeper's search space."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides([str(o) for o in overrides])
    keys = [o.key_or_group for o in parsed if o.is_sweep_override()]
    return list(dict.fromkeys([*keys, *(searched or {})]))


def split_overrides(dirname: str) -> list[str]:
    """`a=1,b=[x,y]` -> [`a=1`, `b=[x,y]`]: Hydra's override_dirname, split outside brackets."""
    items, depth, current = [], 0, ""
    for char in dirname:
        depth += char in "[({"
        depth -= char in "])}"
        if char == "," and depth == 0:
            items.append(current)
            current = ""
        else:
            current += char
    return [*items, current] if current else items
