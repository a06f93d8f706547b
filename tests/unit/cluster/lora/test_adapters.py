"""Adapters inside one pipeline (cluster/lora/adapters.py), on a real tiny FLUX pipeline: loaded
once under names fixed by their files' hashes, applied in one order whatever a request's order,
kept in `slots` sets, deleted once no kept set uses them (the base model as it was), and an
adapter whose file left the node's cache between admission and its batch fails retryably."""

from __future__ import annotations

import pytest
import torch

from cluster.doubles.tiny_loras import build_tiny_lora
from cluster.lora.adapters import PipelineAdapters, adapter_name, in_canonical_order
from cluster.lora.cache import LocalLora, LoraCache, LoraUnavailable
from cluster.spec.errors import ErrorCode
from cluster.spec.families import Family
from cluster.spec.loras import Lora
from cluster.weights.base_weights import BaseWeights
from cluster.weights.sources import load_pipeline


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Three tiny FLUX adapters, local to this node."""
    root = tmp_path_factory.mktemp("adapters")
    cache = LoraCache(root / "cache")
    made = {}
    for name, seed in (("a", 1), ("b", 2), ("c", 3)):
        path = build_tiny_lora(Family.FLUX, root / name, seed=seed)
        lora = Lora(path=f"./{name}", kind="local", location=str(path), scale=1.0)
        made[name] = (lora, cache.get(lora))
    return made


@pytest.fixture
def pipeline():
    return load_pipeline("flux-schnell", Family.FLUX, "tiny:flux", torch.float32, torch.device("cpu"))


def chosen(files, *names: str, scale: float = 1.0) -> tuple[tuple[Lora, ...], dict[str, LocalLora]]:
    """A set as `resolve_loras` hands it on (by location), and its local files."""
    loras = tuple(sorted((Lora(files[n][0].path, "local", files[n][0].location, scale) for n in names),
                         key=lambda lora: lora.location))
    return loras, {files[n][0].location: files[n][1] for n in names}


def test_a_set_is_loaded_once_under_its_hashes_and_applied_in_one_order(pipeline, files):
    adapters = PipelineAdapters(pipeline, slots=2, model="flux-schnell")
    loras, local = chosen(files, "b", "a")
    assert [lora.path for lora in loras] == ["./a", "./b"]
    applied = adapters.activate(loras, local)
    assert [a.sha256 for a in applied] == sorted(a.sha256 for a in applied)  # canonical: by content hash
    assert adapters.loaded() == sorted(adapter_name(local[lora.location]) for lora in loras)
    assert in_canonical_order(loras, local) == in_canonical_order(loras[::-1], local)
    adapters.activate(*chosen(files, "a", "b"))  # the same set named in the other order: nothing loaded
    assert adapters.stats()["loads"] == 2 and adapters.stats()["hits"] == 1


def test_sets_past_the_slots_go_and_the_base_model_is_as_it_was(pipeline, files):
    base = BaseWeights({"transformer": pipeline.transformer})
    adapters = PipelineAdapters(pipeline, slots=1, model="flux-schnell")
    for names in (("a",), ("b",), ("b",), ("c",), ("c",)):
        adapters.activate(*chosen(files, *names))
        assert len(adapters.kept_sets()) == 1 and len(adapters.loaded()) <= 2  # one kept set, one passing
    adapters.activate((), {})  # a batch without adapters
    assert base.problem() is None  # every base weight as it was loaded


def test_a_file_is_checked_at_admission_and_refused_with_the_requests_error(pipeline, files, tmp_path):
    adapters = PipelineAdapters(pipeline, slots=2, model="flux-schnell")
    assert adapters.problem(*chosen(files, "a")) is None
    bad = tmp_path / "not-lora.safetensors"
    bad.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    lora = Lora("./bad", "local", str(bad), 1.0)
    error = adapters.problem((lora,), {lora.location: LocalLora(lora, bad, "00" * 32, bad.stat().st_size)})
    assert error is not None and error.code == ErrorCode.INVALID_PARAMETER and error.param == "loras"


def test_a_file_gone_before_its_batch_fails_retryably(pipeline, files, tmp_path):
    adapters = PipelineAdapters(pipeline, slots=2, model="flux-schnell")
    lora, local = files["c"]
    copy = tmp_path / "c.safetensors"
    copy.write_bytes(local.file.read_bytes())
    moved = LocalLora(lora, copy, local.sha256, local.size)
    copy.unlink()  # evicted from the node's cache after admission, before the device read it
    with pytest.raises(LoraUnavailable) as gone:
        adapters.activate((lora,), {lora.location: moved})
    assert gone.value.error.code.retryable and "left this node's cache" in gone.value.error.message
    assert adapters.loaded() == []  # the pipeline as it was
