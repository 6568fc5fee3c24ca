# The two commands of the quick start: `make train` and `make test` (each sets up first).
PY := .venv/bin/python

.PHONY: setup train test test-slow test-all bench

setup:
	@bash scripts/setup.sh

train: setup
	$(PY) train.py model=softmax

# Fast tier (everything not marked slow).
test: setup
	$(PY) -m pytest

# Longer end-to-end checks; exit code 5 (no test selected) is not a failure.
test-slow: setup
	$(PY) -m pytest -m slow; rc=$$?; [ $$rc -eq 0 ] || [ $$rc -eq 5 ]

test-all: test test-slow

# Speed: lightsweep against a hand-written PyTorch loop, in one run (see README, "Speed").
bench: setup
	$(PY) benchmarks/speed.py $(BENCH_ARGS)
