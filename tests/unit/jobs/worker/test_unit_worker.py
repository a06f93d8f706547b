"""The render actor (jobs/worker/unit_worker.py) without Ray: a shard's units rendered one after the
other and the shard committed from their parts (tests/factories.render_shard), with the FAKE
engine (solid colours, no model). A model that fails to load gives retryable error rows, and
the shard's redo renders only those once the source is fixed; a part an earlier attempt wrote is
not rendered again."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from cluster.spec.errors import ErrorCode
from cluster.storage.results import Storage
from jobs.driver.plan import ShardPlan
from jobs.driver.spec import RowDefaults
from jobs.output.layout import read_metadata, read_stats
from jobs.output.unit_part import PARTS
from jobs.worker.unit_worker import UnitWorker
from jobs.worker.units import read_units
from tests.factories import render_shard

ROWS = [{"id": "r1", "prompt": "a cat", "seed": 5, "n": 2},
        {"id": "r2", "prompt": "a dog", "seed": 9, "n": 1},
        {"id": "r3", "prompt": None, "seed": None, "n": None}]


def config_file(tmp_path, source: str):
    path = tmp_path / f"config-{abs(hash(source))}.yaml"
    path.write_text(yaml.safe_dump({"models": {"flux-schnell": {"source": source, "warmup": False}}}))
    return str(path)


@pytest.fixture
def prompts(tmp_path) -> str:
    path = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), path, row_group_size=2)  # the shard spans two row groups
    return str(path)


def worker(config: str, out: str) -> UnitWorker:
    return UnitWorker(config, out, "png", batch_size=2, job_seed=0,
                      defaults=RowDefaults(model="flux-schnell", width=256, height=256, steps=1))


def test_a_shard_is_rendered_and_committed_with_its_seeds(tmp_path, prompts):
    config, out = config_file(tmp_path, "fake:flux"), str(tmp_path / "out")
    stats = render_shard(worker(config, out), ShardPlan(0, prompts, 0, 3, 4), "files")
    assert (stats.shard, stats.rows, stats.images, stats.rendered, stats.failed, stats.retryable) == \
        ("000000", 3, 4, 3, 1, 0)
    table = read_metadata(Storage(out)).to_pylist()
    rendered = sorted((r["id"], r["seed"]) for r in table if r["error_code"] is None)
    assert rendered == [("r1", 5), ("r1", 6), ("r2", 9)]
    assert [r["error_code"] for r in table if r["id"] == "r3"] == [ErrorCode.EMPTY_PROMPT.value]
    assert all(Storage(out).exists(r["path"]) and r["path"].startswith("images/000000/") for r in table if r["path"])


def test_a_slice_of_the_input_is_read_across_row_groups(tmp_path, prompts):
    config, out = config_file(tmp_path, "fake:flux"), str(tmp_path / "out")
    stats = render_shard(worker(config, out), ShardPlan(3, prompts, 1, 3, 2), "files")
    assert stats.shard == "000003" and stats.rows == 2
    assert sorted({r["id"] for r in read_metadata(Storage(out)).to_pylist()}) == ["r2", "r3"]


def test_a_model_that_failed_to_load_is_rendered_by_the_redo_once_fixed(tmp_path, prompts):
    out, plan = str(tmp_path / "out"), ShardPlan(0, prompts, 0, 3, 4)
    broken = config_file(tmp_path, str(tmp_path / "no-such-weights"))
    stats = render_shard(worker(broken, out), plan, "webdataset")
    assert (stats.failed, stats.retryable) == (4, 3)
    failed = [r for r in read_metadata(Storage(out)).to_pylist() if r["error_code"] == "model_load_failed"]
    assert len(failed) == 3 and "cannot load model flux-schnell" in failed[0]["error"]
    fixed = config_file(tmp_path, "fake:flux")
    again = render_shard(worker(fixed, out), plan, "webdataset", redo=True)
    assert (again.rendered, again.failed, again.retryable, again.kept, again.kept_failed) == (3, 1, 0, 1, 1)
    assert read_stats(Storage(out))["000000"] == again


def test_identical_rows_without_ids_are_two_images(tmp_path):
    prompts = tmp_path / "same.parquet"
    pq.write_table(pa.table({"prompt": ["a fox", "a fox"]}), prompts)
    config, out = config_file(tmp_path, "fake:flux"), str(tmp_path / "out")
    stats = render_shard(worker(config, out), ShardPlan(0, str(prompts), 0, 2, 2), "files")
    table = read_metadata(Storage(out)).to_pylist()
    assert stats.rendered == 2 and len({r["key"] for r in table}) == 2 and len({r["seed"] for r in table}) == 2


def test_units_are_cut_by_images_and_carry_their_rows(prompts):
    """Rows asking for 2, 1 and (a bad `n`: the default) 1 image, in units of at most 2 images."""
    units = [out["unit"] for out in read_units({"plan": ShardPlan(0, prompts, 0, 3, 4), "redo": False}, prompts, 2, 1)]
    assert [(u.start, u.stop, u.units, u.name) for u in units] == [
        (0, 1, 2, "000000000-000000001"), (1, 3, 2, "000000001-000000003")]
    assert [[position for position, _ in u.rows] for u in units] == [["in.parquet:0"], ["in.parquet:1", "in.parquet:2"]]
    assert [row["id"] for _, row in units[1].rows] == ["r2", "r3"]


def test_a_part_an_earlier_attempt_wrote_is_not_rendered_again(tmp_path, prompts):
    """A unit retried after its part was written (its actor died before answering, or the job
    was killed before the shard committed) answers from the part; the shard is the same."""
    config, out = config_file(tmp_path, "fake:flux"), str(tmp_path / "out")
    plan = ShardPlan(0, prompts, 0, 3, 4)
    [first, second] = [o["unit"] for o in read_units({"plan": plan, "redo": False}, prompts, 2, 1)]
    renderer = worker(config, out)
    written = renderer.render_unit(first)
    assert (written.rendered, written.failed, written.reused) == (2, 0, False)
    # An attempt whose model cannot load: any image it rendered would fail, yet none does.
    again = worker(config_file(tmp_path, str(tmp_path / "no-such-weights")), out)
    reused = again.render_unit(first)
    assert (reused.rendered, reused.failed, reused.reused) == (2, 0, True)
    stats = render_shard(renderer, plan, "files")
    assert (stats.rendered, stats.failed) == (3, 1) and not Storage(out).exists(PARTS + "/000000")


def test_a_row_asking_for_a_billion_images_is_one_refused_row_in_a_unit_of_its_own(tmp_path):
    """A hostile `n` costs its own row only: a unit of its own, refused as one error row, with
    its neighbours' images rendered (nothing expands it a billion times)."""
    path = tmp_path / "hostile.parquet"
    rows = [{"id": "ok1", "prompt": "a cat", "n": 1}, {"id": "huge", "prompt": "a dog", "n": 10**9},
            {"id": "ok2", "prompt": "a cow", "n": 1}]
    pq.write_table(pa.Table.from_pylist(rows), path)
    units = [out["unit"] for out in read_units({"plan": ShardPlan(0, str(path), 0, 3, 3), "redo": False},
                                               str(path), 2, 1)]
    assert [[row["id"] for _, row in u.rows] for u in units] == [["ok1"], ["huge"], ["ok2"]]
    renderer = worker(config_file(tmp_path, "fake:flux"), str(tmp_path / "out"))
    stats = [renderer.render_unit(u) for u in units]
    assert [(s.rendered, s.failed) for s in stats] == [(1, 0), (0, 1), (1, 0)]
