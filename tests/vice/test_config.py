"""The schema's checks: every bad value named by its key, with what is allowed, before anything runs."""

from __future__ import annotations

import dataclasses

import pytest
from hydra import compose, initialize_config_dir

from vice.config import ConfigError, register_schema, to_config, validate
from vice.launch.app import SWEEPS_DIR


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.embed_dim=0", "model.embed_dim=0 is invalid: >= 1 (the embedding dimension D)"),
        ("views.num_views=1", "views.num_views=1 is invalid: >= 2 (view 0 gives targets, others predict)"),
        ("views.mask_ratio=-0.1", "views.mask_ratio=-0.1 is invalid: within [0, 1]"),
        ("regions.region_size=3", "regions.region_size=3 is invalid: >= 4 for SLIC"),
        ("swav.queue_length=2", "swav.queue_length=2 is invalid: >= data.batch_size (4)"),
        ("swav.num_prototypes=1", "swav.num_prototypes=1 is invalid: >= 2 (K)"),
        ("views.resize_range=[2.0,1.0]", "views.resize_range=[2.0, 1.0] is invalid: [low, high]"),
        ("train.amp=fp8", "train.amp='fp8' is invalid: one of"),
        ("swav.target_views=4", "swav.target_views=4 is invalid: within [1, views.num_views = 3]"),
        ("swav.target_views=0", "swav.target_views=0 is invalid: within [1, views.num_views = 3]"),
    ],
)
def test_a_bad_value_composed_from_the_sweeps_fails_naming_the_key(override: str, message: str) -> None:
    register_schema()
    with initialize_config_dir(config_dir=str(SWEEPS_DIR), version_base="1.3", job_name="t"):
        cfg = compose(
            "config", overrides=["experiment=demo", "regions.method=slic", "data.batch_size=4", override]
        )
    with pytest.raises(ConfigError) as error:
        validate(to_config(cfg))
    assert message in str(error.value)


def test_the_demo_experiment_is_valid() -> None:
    register_schema()
    with initialize_config_dir(config_dir=str(SWEEPS_DIR), version_base="1.3", job_name="t"):
        validate(to_config(compose("config", overrides=["experiment=demo"])))


def compose_experiment(*overrides: str):
    register_schema()
    with initialize_config_dir(config_dir=str(SWEEPS_DIR), version_base="1.3", job_name="t"):
        return to_config(compose("config", overrides=list(overrides)))


def test_the_photos_recipe_is_the_one_the_learning_benchmark_measures() -> None:
    cfg = compose_experiment("experiment=photos")
    validate(cfg)
    assert (cfg.model.num_stages, cfg.swav.sinkhorn_epsilon, cfg.optim.base_lr) == (3, 0.03, 5.0)
    assert (cfg.swav.target_views, cfg.train.max_steps) == (3, 1600)
    assert (cfg.swav.queue_length, cfg.views.color_strength, cfg.regions.connectivity) == (0, 0.5, True)
    assert cfg.data.root.endswith("textures/images/train") and cfg.eval.dataset == "labelled_folder"


@pytest.mark.parametrize(
    ("cell", "changed"),
    [
        ("recipe", {}),
        ("raw_slic_labels", {"regions.connectivity": False}),
        ("four_stages", {"model.num_stages": 4}),
        ("epsilon_005", {"swav.sinkhorn_epsilon": 0.05}),
        ("lr_1", {"optim.base_lr": 1.0}),
        ("full_jitter", {"views.color_strength": 1.0}),
        ("queue_384", {"swav.queue_length": 384, "swav.queue_start_step": 50}),
        ("one_target_view", {"swav.target_views": 1}),
        ("full_budget", {"train.max_steps": 1600}),
        ("full_budget_one_target_view", {"train.max_steps": 1600, "swav.target_views": 1}),
    ],
)
def test_each_learning_photos_cell_undoes_exactly_one_fix(cell: str, changed: dict) -> None:
    recipe = compose_experiment("experiment=learning_photos", "cell/learning_photos=recipe")
    ablated = compose_experiment("experiment=learning_photos", f"cell/learning_photos={cell}")
    validate(ablated)
    keys = [
        "regions.connectivity",
        "model.num_stages",
        "swav.sinkhorn_epsilon",
        "optim.base_lr",
        "views.color_strength",
        "swav.queue_length",
        "swav.queue_start_step",
        "swav.target_views",
        "train.max_steps",
    ]

    def value(cfg, key):
        section, name = key.split(".")
        return getattr(getattr(cfg, section), name)

    assert {k: value(ablated, k) for k in keys if value(ablated, k) != value(recipe, k)} == changed
    assert ablated.experiment == "learning_photos" and ablated.train.threads == 1
    # The sweep's budget is a quarter of the recipe's; everything else is the recipe's.
    photos = compose_experiment("experiment=photos")
    assert (recipe.train.max_steps, photos.train.max_steps) == (400, 1600)
    assert dataclasses.replace(recipe, experiment="photos", train=photos.train) == photos


def test_a_bad_num_stages_names_the_key() -> None:
    cfg = compose_experiment("experiment=photos", "model.num_stages=5")
    with pytest.raises(ConfigError, match=r"model.num_stages=5 is invalid: 4 \(c2..c5, the paper\) or 3"):
        validate(cfg)
