"""Config files: typos fail at load with the key named; overrides apply over the catalogue."""

from __future__ import annotations

import pytest

from cluster.spec.config import CONFIG_DIR, DEFAULT_CONFIG, ConfigError, load_config


def write(tmp_path, text: str):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_embedded_default_maps_every_model_to_tiny_weights():
    config = load_config(DEFAULT_CONFIG)
    assert set(config.models) == {"flux-schnell", "flux-dev", "flux-merged", "flux-kontext",
                                  "stable-diffusion-xl", "stable-diffusion-v1.5"}
    assert all(spec.source.startswith("tiny:") for spec in config.specs().values())


def test_cluster_config_points_at_public_weights():
    specs = load_config(CONFIG_DIR / "cluster.yaml").specs()
    assert specs["flux-schnell"].source == "black-forest-labs/FLUX.1-schnell"
    assert specs["stable-diffusion-xl"].source == "stabilityai/stable-diffusion-xl-base-1.0"
    assert specs["stable-diffusion-v1.5"].max_batch_size == 16


def test_typo_in_model_entry_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"models\.flux-schnell\.max_batch_sise: Extra inputs"):
        load_config(write(tmp_path, "models:\n  flux-schnell: {source: 'tiny:flux', max_batch_sise: 2}\n"))


def test_typo_at_top_level_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match="modles"):
        load_config(write(tmp_path, "modles: {}\n"))


def test_unknown_model_name_needs_like(tmp_path):
    with pytest.raises(ConfigError, match="my-sdxl.*not a catalogue model"):
        load_config(write(tmp_path, "models:\n  my-sdxl: {source: 'tiny:sdxl'}\n"))
    config = load_config(write(tmp_path, "models:\n  my-sdxl: {source: 'tiny:sdxl', like: stable-diffusion-xl, default_steps: 9}\n"))
    spec = config.spec("my-sdxl")
    assert (spec.name, spec.family.value, spec.default_steps, spec.max_steps) == ("my-sdxl", "sdxl", 9, 500)


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "models: [unclosed\n"))


def test_a_compiled_model_takes_adapters_only_when_asked_into_a_slot_of_its_lora_rank(tmp_path):
    config = load_config(write(tmp_path, "models:\n  flux-schnell: {source: 'tiny:flux', compile: true}\n"))
    assert config.spec("flux-schnell").loras.max == 0  # the slot costs every request: opt in
    config = load_config(write(tmp_path, "models:\n  flux-schnell: {source: 'tiny:flux', compile: true, "
                                         "max_loras: 2, lora_rank: 16}\n"))
    assert (config.spec("flux-schnell").loras.max, config.spec("flux-schnell").lora_rank) == (2, 16)
    with pytest.raises(ConfigError, match="lora_rank"):
        load_config(write(tmp_path, "models:\n  flux-schnell: {source: 'tiny:flux', lora_rank: 0}\n"))


def test_fill_weights_on_a_model_that_cannot_take_them_name_the_model(tmp_path):
    config = load_config(write(tmp_path, "models:\n  flux-dev: {source: 'tiny:flux', fill: 'tiny:flux-fill'}\n"))
    assert config.spec("flux-dev").fill == "tiny:flux-fill"
    with pytest.raises(ConfigError, match=r"models\.stable-diffusion-xl: fill: only FLUX models take Fill weights"):
        load_config(write(tmp_path, "models:\n  stable-diffusion-xl: {source: 'tiny:sdxl', fill: 'tiny:flux-fill'}\n"))
