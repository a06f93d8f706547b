"""LoRA adapters in the render core, on the tiny FLUX and SDXL pipelines with tiny adapters made
on the spot (PEFT, random non-zero weights, saved with the pipeline's `save_lora_weights`):

- scale 0 renders the base model's pixels, bit for bit, and so does every request without
  adapters after any set was applied (adapters are never fused);
- a request with adapters is bit-identical alone and inside a batch of the same set, and a batch
  of requests with two different sets is split into one device batch per set;
- two adapters with their scales render what diffusers' own `set_adapters` renders;
- the pipeline keeps `lora_slots` sets (LRU) and deletes adapters no kept set uses; a set used
  once does not push out one used more often lately (it renders, then goes);
- the PNG's sampling metadata names each adapter with its sha256 and scale.
"""

from __future__ import annotations

import hashlib
import json

import diffusers
import numpy as np
import pytest

from cluster.doubles.tiny_loras import build_tiny_lora
from cluster.doubles.tiny_pipelines import TINY_DIRS, build_tiny, tiny_cache_dir
from cluster.engine.batch_invariance import make_batch_invariant
from cluster.engine.renderer import Renderer
from cluster.images.encoding import png_text
from cluster.lora.cache import LoraCache
from cluster.spec.families import PIPELINE_CLASS, Family
from cluster.spec.loras import LoraRef
from cluster.spec.request import RenderRequest
from cluster.spec.seeding import generator
from tests.conftest import images, pixels

MODELS = {"flux-schnell": Family.FLUX, "stable-diffusion-xl": Family.SDXL}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """Two tiny adapters per family: root/<family>/{a,b}/pytorch_lora_weights.safetensors."""
    root = tmp_path_factory.mktemp("loras")
    for family in set(MODELS.values()):
        for name, seed in (("a", 1), ("b", 2)):
            build_tiny_lora(family, root / family.value / name, seed=seed)
    return root


def renderer(local_config, root, model: str, slots: int = 3) -> Renderer:
    spec = local_config.spec(model)
    spec = spec.model_copy(update={"warmup": False, "lora_slots": slots,
                                   "loras": spec.loras.model_copy(update={"local_root": str(root)})})
    return Renderer(spec, device="cpu", lora_cache=LoraCache(root / "cache"))


@pytest.fixture(scope="module", params=list(MODELS))
def engine(request, local_config, root):
    return renderer(local_config, root, request.param)


def ask(engine: Renderer, seed: int, *loras: tuple[str, float]) -> RenderRequest:
    family = MODELS[engine.spec.name].value
    return RenderRequest(model=engine.spec.name, prompt="a lighthouse", seed=seed, width=256, height=256, steps=2,
                         loras=tuple(LoraRef(f"./{family}/{name}/pytorch_lora_weights.safetensors", scale)
                                     for name, scale in loras))


def test_scale_zero_and_no_adapters_render_the_base_model_exactly(engine):
    [base] = images(engine, ask(engine, 1))
    [zero] = images(engine, ask(engine, 1, ("a", 0.0)))
    [styled] = images(engine, ask(engine, 1, ("a", 1.0)))
    [after] = images(engine, ask(engine, 1))
    assert np.array_equal(zero, base) and np.array_equal(after, base)
    assert not np.array_equal(styled, base)  # the adapter does change the picture


def test_an_adapter_request_is_the_same_alone_and_in_a_batch_of_its_set(engine):
    [alone] = images(engine, ask(engine, 5, ("a", 0.8)))
    batched = images(engine, ask(engine, 4, ("a", 0.8)), ask(engine, 5, ("a", 0.8)), ask(engine, 6, ("a", 0.8)))
    assert np.array_equal(batched[1], alone)


def test_two_sets_are_never_in_one_device_batch(engine):
    requests = [ask(engine, 7, ("a", 1.0)), ask(engine, 7, ("b", 1.0)), ask(engine, 8, ("a", 1.0)), ask(engine, 8)]
    resolved = [engine.resolve(r) for r in requests]
    _, batches = engine.plan(resolved)
    assert sorted(sorted(image.request_index for image in batch) for batch in batches) == [[0, 2], [1], [3]]
    mixed = images(engine, *requests)
    for request, picture in zip(requests, mixed):
        assert np.array_equal(picture, images(engine, request)[0])


def test_two_adapters_with_scales_equal_diffusers_own_set_adapters(engine, root):
    family = MODELS[engine.spec.name]
    [ours] = images(engine, ask(engine, 3, ("a", 0.7), ("b", -0.4)))
    pipeline = getattr(diffusers, PIPELINE_CLASS[family]).from_pretrained(
        build_tiny(family, tiny_cache_dir() / TINY_DIRS[family]))
    pipeline.set_progress_bar_config(disable=True)
    for name in ("a", "b"):
        pipeline.load_lora_weights(str(root / family.value / name), adapter_name=name)
    # Their deltas add in the order of the files' hashes, whatever order the request names them in.
    scales = dict(sorted({"a": 0.7, "b": -0.4}.items(), key=lambda item: _sha256(root, family, item[0])))
    pipeline.set_adapters(list(scales), list(scales.values()))
    # The same CPU kernels as every Renderer on a CPU (cluster/engine/batch_invariance.py).
    make_batch_invariant([c for c in pipeline.components.values() if hasattr(c, "modules")])
    theirs = pipeline(prompt=["a lighthouse"], width=256, height=256, num_inference_steps=2,
                      guidance_scale=engine.spec.default_guidance, generator=[generator(3, "cpu")]).images[0]
    assert np.array_equal(ours, np.asarray(theirs.convert("RGB")))


def _sha256(root, family: Family, name: str) -> str:
    return hashlib.sha256((root / family.value / name / "pytorch_lora_weights.safetensors").read_bytes()).hexdigest()


def test_sets_beyond_the_slots_are_evicted_and_unused_adapters_deleted(local_config, root):
    engine = renderer(local_config, root, "flux-schnell", slots=2)
    [base] = images(engine, ask(engine, 9))
    images(engine, ask(engine, 9, ("a", 1.0)))
    images(engine, ask(engine, 9, ("a", 0.5), ("b", 0.5)))
    assert len(engine.adapters.kept_sets()) == 2 and len(engine.adapters.loaded()) == 2
    images(engine, ask(engine, 9, ("b", 1.0)))  # the first set (a alone) goes; a stays for the second
    assert len(engine.adapters.kept_sets()) == 2 and len(engine.adapters.loaded()) == 2
    images(engine, ask(engine, 9, ("b", 0.3)))  # the second goes too: nothing holds a any more
    a_name = "l" + hashlib.sha256((root / "flux/a/pytorch_lora_weights.safetensors").read_bytes()).hexdigest()[:16]
    assert a_name not in engine.adapters.loaded() and len(engine.adapters.loaded()) == 1
    assert np.array_equal(images(engine, ask(engine, 9))[0], base)
    assert engine.adapters.loads == 2  # a and b, each once: sets share the adapters they have in common
    images(engine, ask(engine, 9, ("a", 1.0)))
    assert engine.adapters.loads == 3  # a was deleted: a set that needs it again loads it again


def test_a_one_off_set_renders_but_does_not_push_out_a_popular_one(local_config, root):
    engine = renderer(local_config, root, "flux-schnell", slots=1)
    popular = ask(engine, 9, ("a", 1.0))
    for _ in range(3):
        images(engine, popular)
    [kept] = engine.adapters.kept_sets()
    [one_off] = images(engine, ask(engine, 9, ("b", 1.0)))
    assert engine.adapters.kept_sets() == [kept] and len(engine.adapters.loaded()) == 2
    assert not np.array_equal(one_off, images(engine, popular)[0])  # b was applied, then a again
    assert (engine.adapters.hits, engine.adapters.misses, engine.adapters.loads) == (3, 2, 2)
    for _ in range(4):  # b, asked again and again, earns its place
        images(engine, ask(engine, 9, ("b", 1.0)))
    assert engine.adapters.kept_sets() != [kept] and len(engine.adapters.loaded()) == 1


def test_the_png_names_each_adapter_with_its_hash_and_scale(engine, root):
    [result] = engine.render([ask(engine, 2, ("a", 0.6), ("b", 1.0))])
    family = MODELS[engine.spec.name].value
    expected = [{"path": f"./{family}/{name}/pytorch_lora_weights.safetensors",
                 "sha256": hashlib.sha256((root / family / name / "pytorch_lora_weights.safetensors").read_bytes())
                 .hexdigest(), "scale": scale} for name, scale in (("a", 0.6), ("b", 1.0))]
    expected.sort(key=lambda lora: lora["sha256"])  # a set's canonical order: by content hash
    assert json.loads(png_text(result.image)["loras"]) == expected
    assert [lora.as_dict() for lora in result.loras] == expected


def test_a_set_renders_the_same_in_any_order(engine):
    forward = ask(engine, 12, ("a", 0.7), ("b", 0.5))
    backward = ask(engine, 12, ("b", 0.5), ("a", 0.7))
    assert engine.resolve(forward).loras == engine.resolve(backward).loras  # one set, one batch key
    assert np.array_equal(images(engine, forward)[0], images(engine, backward)[0])


def test_a_hostile_adapter_fails_only_its_own_request_in_a_batch(local_config, root):
    """A Control LoRA's norms, a wide layer and a garbage file, each in one round with two clean
    requests: the clean ones render what they render alone, the base model is unchanged."""
    from tests import hostile_adapters

    engine = renderer(local_config, root, "flux-schnell")
    hostile = {"norms": hostile_adapters.with_norms(root / "hostile", engine),
               "wide": hostile_adapters.wide(root / "hostile", engine),
               "garbage": hostile_adapters.garbage(root / "hostile")}
    plain, styled = ask(engine, 14), ask(engine, 15, ("a", 0.9))
    [plain_alone], [styled_alone] = images(engine, plain), images(engine, styled)
    for name, path in hostile.items():
        bad = RenderRequest(model="flux-schnell", prompt="x", seed=1, width=256, height=256, steps=2,
                            loras=(LoraRef(f"./hostile/{path.name}", 1.0),))
        results = engine.render([plain, bad, styled])
        assert results[1].error is not None and results[1].error.param == "loras", (name, results[1].error)
        assert results[1].error.code.value == "invalid_parameter"
        assert np.array_equal(pixels(results[0].image), plain_alone), name
        assert np.array_equal(pixels(results[2].image), styled_alone), name
    engine.check_health()  # the base weights are the ones loaded
