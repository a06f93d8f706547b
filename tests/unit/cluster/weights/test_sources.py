"""Weight sources: classification, and clear errors for missing or broken model directories."""

from __future__ import annotations

import os

import pytest
import torch

from cluster.spec.families import Family
from cluster.weights.sources import ModelLoadError, load_fill_transformer, load_pipeline, parse_source


def test_source_kinds(tmp_path):
    assert parse_source("tiny:sdxl").kind == "tiny"
    assert parse_source("random:flux").kind == "random"
    assert parse_source("s3://bucket/flux/").kind == "fsspec"
    assert parse_source("file:///models/flux").kind == "fsspec"
    assert parse_source("black-forest-labs/FLUX.1-schnell").kind == "hub"
    assert parse_source(str(tmp_path)).kind == "local"
    assert parse_source("./models/flux").kind == "local"


def test_unknown_tiny_family():
    with pytest.raises(ModelLoadError, match="unknown family.*tiny:<flux, flux-kontext, flux-fill, sdxl, sd15>"):
        parse_source("tiny:dalle")


def load(source: str):
    return load_pipeline("flux-schnell", Family.FLUX, source, torch.float32, torch.device("cpu"))


def test_missing_directory_is_named(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(ModelLoadError, match=f"cannot load model flux-schnell from {missing}: weights directory .* does not exist"):
        load(str(missing))


def test_directory_without_pipeline_is_named(tmp_path):
    with pytest.raises(ModelLoadError, match="not a diffusers pipeline directory"):
        load(str(tmp_path))


def test_empty_fsspec_location(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="no files at"):
        load(f"file://{tmp_path / 'empty'}")


def test_a_placeholder_hub_token_is_dropped_before_the_hub_sees_it(monkeypatch):
    """The Secret template's `hf_...` sent as a token gets 401 even for a public repository."""
    from cluster.weights.sources import drop_placeholder_hub_token

    monkeypatch.setenv("HF_TOKEN", "hf_...")
    assert "not a Hugging Face token" in drop_placeholder_hub_token() and "HF_TOKEN" not in os.environ
    real = "hf_" + "aB3" * 12
    monkeypatch.setenv("HF_TOKEN", real)
    assert drop_placeholder_hub_token() is None and os.environ["HF_TOKEN"] == real
    monkeypatch.delenv("HF_TOKEN")
    assert drop_placeholder_hub_token() is None


@pytest.mark.parametrize(("source", "words"), [
    ("tiny:flux", "tiny:flux is not Fill weights; use tiny:flux-fill"),
    ("sim:flux", "a SIMULATED or FAKE engine has no Fill weights"),
])
def test_fill_weights_of_the_wrong_kind_are_refused_naming_model_and_source(source, words):
    with pytest.raises(ModelLoadError, match=f"cannot load the Fill weights of model flux-dev from {source}: {words}"):
        load_fill_transformer("flux-dev", source, torch.float32, torch.device("cpu"))
