"""Input rows -> work items (jobs/worker/rows.py): ids and seeds fixed by content, one item per image,
bad rows as typed error items (final), never a crash."""

from __future__ import annotations

import math

from cluster.spec.config import load_config
from cluster.spec.errors import ErrorCode
from jobs.driver.spec import RowDefaults
from jobs.worker.rows import WorkItem, expand_row, image_key, row_id

SPECS = load_config().specs()
DEFAULTS = RowDefaults(model="flux-schnell", width=512, height=512, steps=2)


def expand(row: dict, **defaults) -> list[WorkItem]:
    return expand_row(row, SPECS, DEFAULTS.model_copy(update=defaults), job_seed=11)


def test_a_row_becomes_one_item_per_image_seeded_seed_plus_i():
    items = expand({"id": "r1", "prompt": "a cat", "seed": 40, "n": 3})
    assert [(i.index, i.request.seed, i.request.n) for i in items] == [(0, 40, 1), (1, 41, 1), (2, 42, 1)]
    assert len({i.key for i in items}) == 3 and all(i.error is None for i in items)
    assert (items[0].request.width, items[0].request.height, items[0].request.steps) == (512, 512, 2)
    assert "." not in items[0].sample and "/" not in items[0].sample  # a webdataset sample name


def test_ids_and_derived_seeds_are_fixed_by_content():
    row = {"prompt": "a fox", "n": 1}
    assert row_id(row) == row_id(dict(row)) and row_id(row) != row_id({"prompt": "a dog", "n": 1})
    assert row_id({"prompt": "a fox", "seed": math.nan}) == row_id({"prompt": "a fox"})  # NaN is absent
    assert expand(row)[0].request.seed == expand(dict(row))[0].request.seed
    assert image_key("x/../y", 0).count("/") == 1 and ".." not in image_key("x/../y", 0)


def test_bad_rows_are_final_error_items_with_the_cores_codes():
    cases = {
        "no prompt": ({"id": "a"}, ErrorCode.EMPTY_PROMPT, "prompt is missing"),
        "bad size": ({"id": "b", "prompt": "x", "size": "big"}, ErrorCode.INVALID_PARAMETER, "size must look like W*H"),
        "off grid": ({"id": "c", "prompt": "x", "width": 1000, "height": 1000}, ErrorCode.INVALID_PARAMETER,
                     "size 1000*1000 is not allowed"),
        "bad steps": ({"id": "d", "prompt": "x", "steps": 0}, ErrorCode.INVALID_PARAMETER, "steps must be"),
        "no model": ({"id": "e", "prompt": "x", "model": "nope"}, ErrorCode.MODEL_NOT_FOUND, "model nope is not"),
        "bad value": ({"id": "f", "prompt": "x", "n": "two"}, ErrorCode.INVALID_PARAMETER, "bad value in row"),
    }
    for name, (row, code, words) in cases.items():
        [item] = expand(row)
        assert (item.error.code, item.index, item.request) == (code, 0, None), name
        assert item.error.text().startswith(words), (name, item.error.text())
        assert not item.error.code.retryable, name


def test_a_loras_column_as_json_text_or_a_list_of_structs():
    as_text = expand({"id": "j", "prompt": "x", "loras": '[{"path": "org/style", "scale": 0.5}, {"path": "org/b"}]'})
    as_structs = expand({"id": "j", "prompt": "x", "loras": [{"path": "org/style", "scale": 0.5},
                                                             {"path": "org/b", "scale": None}]})
    assert as_text[0].request.loras == as_structs[0].request.loras
    assert [(l.location, l.scale) for l in as_text[0].request.loras] == [  # a set, in one order
        ("org/b/pytorch_lora_weights.safetensors", 1.0), ("org/style/pytorch_lora_weights.safetensors", 0.5)]
    assert as_text[0].columns()["loras"] == '[{"path": "org/b", "scale": 1.0}, {"path": "org/style", "scale": 0.5}]'
    for bad, words in (("not json", "JSON list"), ('{"path": "a"}', "a list of at most"),
                       ('[{"scale": 1}]', "item 0 needs a path"),
                       ('[{"path": "org/a", "scale": "big"}]', "scale must be a number"),
                       ('[{"path": "../x.safetensors"}]', "no loras.local_root is configured"),
                       # Hostile cells: an error row each, never a failed shard.
                       ("[" * 100_000 + "]" * 100_000, "JSON list"),
                       ('[{"path": "org/a", "scale": 1' + "0" * 400 + '}]', "scale must be a number in range"),
                       ('[{"path": "org/a", "scale": Infinity}]', "scale must be a finite number")):
        [item] = expand({"id": "k", "prompt": "x", "loras": bad})
        assert item.error.param == "loras" and words in item.error.text() and not item.error.code.retryable, bad


def _png(mode: str, size: tuple[int, int], fill) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new(mode, size, fill).save(buffer, format="PNG")
    return buffer.getvalue()


def test_image_and_mask_columns_make_image_to_image_and_inpaint_rows():
    image = _png("RGB", (512, 512), (10, 20, 30))
    mask = _png("L", (512, 512), 255)  # white: repaint all of it
    [plain] = expand({"id": "a", "prompt": "x", "image": image, "strength": 0.5})
    assert (plain.request.mode, plain.request.strength, plain.request.init_image) == ("image", 0.5, image)
    [masked] = expand({"id": "b", "prompt": "x", "image": {"bytes": image, "path": "in.png"}, "mask": mask})
    assert (masked.request.mode, masked.request.strength) == ("inpaint", 1.0)  # Hugging Face's Image struct
    assert masked.columns()["mode"] == "inpaint" and masked.columns()["strength"] == 1.0


def test_a_bad_image_or_mask_is_one_refused_row():
    image = _png("RGB", (512, 512), (10, 20, 30))
    cases = {"mask without image": ({"mask": _png("L", (512, 512), 255)}, "mask", "needs an image column"),
             "not an image": ({"image": b"not a png"}, "image", "not a PNG, JPEG or WebP"),
             "mask of another size": ({"image": image, "mask": _png("L", (64, 64), 255)}, "mask", "512x512"),
             "an empty mask": ({"image": image, "mask": _png("L", (512, 512), 0)}, "mask", "marks nothing"),
             "strength out of range": ({"image": image, "strength": 3}, "strength", "at most 1")}
    for name, (columns, param, words) in cases.items():
        [item] = expand({"id": name, "prompt": "x", **columns})
        assert item.request is None and item.error.param == param and words in item.error.message, (name, item.error)
