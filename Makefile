# The two commands of the README: `make serve` and `make test`.
.PHONY: serve test lint bench install

install:
	./scripts/bootstrap

serve: install
	.venv/bin/runyard serve --jobs examples/jobs --data-dir .runyard

lint: install
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy
	.venv/bin/lint-imports

test: lint
	.venv/bin/pytest

bench:
	./scripts/bootstrap --group bench
	.venv/bin/python -m bench
