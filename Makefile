# The two commands of the README, plus what they build on. Each installs what it needs.
PY := .venv/bin/python
STAMP := .venv/.installed

.PHONY: install demo test lint bench

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install --quiet --upgrade pip
	# torch 2.14.1 / torchvision 0.29.1 are pinned in pyproject.toml (local wheels here, CUDA builds on a cluster).
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m vice.demo

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	.venv/bin/ruff check vice analysis benchmarks tests
	.venv/bin/ruff format --check vice analysis benchmarks tests
	.venv/bin/mypy vice

bench: $(STAMP)
	$(PY) -m benchmarks
