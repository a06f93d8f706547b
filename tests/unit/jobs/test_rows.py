"""Input rows -> work items (jobs/rows.py): ids and seeds fixed by content, one item per image,
bad rows as typed error items (final), never a crash."""

from __future__ import annotations

import math

import pandas as pd

from cluster.config import load_config
from cluster.errors import ErrorCode
from jobs.rows import WORK_COLUMNS, expand_batch, expand_row, image_key, row_id
from jobs.spec import RowDefaults

SPECS = load_config().specs()
DEFAULTS = RowDefaults(model="flux-schnell", width=512, height=512, steps=2)


def expand(row: dict, **defaults) -> list[dict]:
    return expand_row(row, SPECS, DEFAULTS.model_copy(update=defaults), job_seed=11)


def test_a_row_becomes_one_item_per_image_seeded_seed_plus_i():
    items = expand({"id": "r1", "prompt": "a cat", "seed": 40, "n": 3})
    assert [(i["index"], i["seed"]) for i in items] == [(0, 40), (1, 41), (2, 42)]
    assert len({i["key"] for i in items}) == 3 and all(i["error_code"] is None for i in items)
    assert (items[0]["width"], items[0]["height"], items[0]["steps"]) == (512, 512, 2)


def test_ids_and_derived_seeds_are_fixed_by_content():
    row = {"prompt": "a fox", "n": 1}
    assert row_id(row) == row_id(dict(row)) and row_id(row) != row_id({"prompt": "a dog", "n": 1})
    assert row_id({"prompt": "a fox", "seed": math.nan}) == row_id({"prompt": "a fox"})  # NaN is absent
    assert expand(row)[0]["seed"] == expand(dict(row))[0]["seed"]
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
        assert (item["error_code"], item["index"]) == (code.value, 0), name
        assert item["error"].startswith(words), (name, item["error"])
        assert not ErrorCode(item["error_code"]).retryable, name


def test_expand_batch_skips_committed_images_and_counts_the_rest_per_row():
    batch = pd.DataFrame([{"id": "r1", "prompt": "a", "n": 2}, {"id": "r2", "prompt": "b", "n": 1}])
    done = frozenset({image_key("r1", 0)})
    items = expand_batch(batch, SPECS, DEFAULTS, 0, done)
    assert list(items.columns) == WORK_COLUMNS
    assert [(r.id, r.index, r.row_images) for r in items.itertuples()] == [("r1", 1, 1), ("r2", 0, 1)]
