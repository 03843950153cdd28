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

# A smoke ablation sweep (1px vs grid vs superpixels x 2 seeds) on the built-in synthetic scenes, through
# Hydra multirun + submitit (the local SLURM cluster when one is up, else local processes), tracked in
# MLflow, then the regenerated Table 3 and its figure.
OUT := $(CURDIR)/outputs
demo: $(STAMP)
	.venv/bin/vice-sweep table3_decomposition --smoke --launcher auto --output-dir $(OUT)
	.venv/bin/vice-tables --tracking-uri sqlite:///$(OUT)/mlflow.db --experiment table3_decomposition_smoke --out $(OUT)/tables --compare
	# Does the smoke ordering match the paper's (superpixels > grid > 1px)? A verdict per Table 3 claim.
	.venv/bin/vice-tables --tracking-uri sqlite:///$(OUT)/mlflow.db --experiment table3_decomposition_smoke --out $(OUT)/tables --claims

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	.venv/bin/ruff check vice analysis benchmarks tests
	.venv/bin/ruff format --check vice analysis benchmarks tests
	.venv/bin/mypy vice

bench: $(STAMP)
	$(PY) -m benchmarks
