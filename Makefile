# The two commands of the README: `make demo` and `make test`.
.PHONY: demo test setup bench

setup:
	@bash scripts/setup.sh

demo: setup
	.venv/bin/obsflow demo

test: setup
	.venv/bin/python -m pytest $(PYTEST_ARGS)

bench: setup
	.venv/bin/python benchmarks/fill.py
	.venv/bin/python benchmarks/online.py
	.venv/bin/python benchmarks/transfer.py
	.venv/bin/python benchmarks/verify.py
