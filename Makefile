# The two commands of the README: `make demo` and `make test`.
.PHONY: demo test setup bench

setup:
	@bash scripts/setup.sh test

demo:
	@bash scripts/setup.sh demo
	.venv/bin/obsflow demo

test:
	@bash scripts/setup.sh test
	.venv/bin/python -m pytest $(PYTEST_ARGS)

bench: setup
	.venv/bin/python benchmarks/fill.py
	.venv/bin/python benchmarks/online.py
	.venv/bin/python benchmarks/transfer.py
	.venv/bin/python benchmarks/verify.py
