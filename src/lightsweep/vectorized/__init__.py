"""Vectorized sweeps: M members of a sweep trained together as one batched model (leading member dimension M)."""
