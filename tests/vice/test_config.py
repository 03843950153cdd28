"""The schema's checks: every bad value named by its key, with what is allowed, before anything runs."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

from vice.app import SWEEPS_DIR
from vice.config import ConfigError, register_schema, to_config, validate


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
