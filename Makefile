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
# The smoke preset trains 10 steps (a pipeline check); the demo trains 150 with the photos recipe's
# learning settings (README, "Learning on real photographs"), so that its trained cells can beat both floors.
OUT := $(CURDIR)/outputs
DEMO_TRAINING := train.max_steps=150 optim.warmup_steps=10 optim.base_lr=3.0 model.num_stages=3 \
	swav.target_views=3 swav.sinkhorn_epsilon=0.03 views.color_strength=0.5 views.grayscale_prob=0.8 \
	views.blur_prob=0.0 train.log_every=25 train.checkpoint_every=50
demo: $(STAMP)
	.venv/bin/vice-sweep table3_decomposition --smoke --launcher auto --output-dir $(OUT) $(DEMO_TRAINING)
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
