# The two commands of the README: `make serve` and `make test`.
.PHONY: serve test lint bench install browser slurm bwrap wrk screenshots

install:
	./scripts/bootstrap

serve: install
	.venv/bin/runyard serve --jobs examples/jobs --data-dir .runyard

lint: install
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy
	.venv/bin/lint-imports

# Debian's chromium, for the dashboard's browser tests (installed once, when missing)
browser:
	./scripts/browser

# Debian's Slurm and munge, for the tests against a real one-node cluster (tests/slurm/;
# installed once, when missing; the tests start and stop the daemons themselves)
slurm:
	./scripts/slurm

# Debian's bubblewrap, for sandboxed jobs ([sandbox]) and their tests (installed once, when missing)
bwrap:
	./scripts/bwrap

# Debian's wrk, the bench's load generator for accepted submissions (installed once, when missing)
wrk:
	./scripts/wrk

test: lint browser slurm bwrap
	.venv/bin/pytest

screenshots: install browser
	.venv/bin/python scripts/screenshots.py

bench: wrk
	./scripts/bootstrap --group bench
	.venv/bin/python -m bench
