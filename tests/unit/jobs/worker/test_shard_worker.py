"""The render actor (jobs/worker/shard_worker.py) without Ray: a shard's rows in, its images and metadata
committed, with the FAKE engine (solid colours, no model). A model that fails to load gives
retryable error rows, and the shard's redo renders only those once the source is fixed."""

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
from jobs.worker.shard_worker import ShardWorker

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


def worker(config: str, out: str, prompts: str, fmt: str = "files") -> ShardWorker:
    return ShardWorker(config, out, fmt, "png", batch_size=2, input_uri=prompts, job_seed=0,
                       defaults=RowDefaults(model="flux-schnell", width=256, height=256, steps=1))


def test_a_shard_is_rendered_and_committed_with_its_seeds(tmp_path, prompts):
    config, out = config_file(tmp_path, "fake:flux"), str(tmp_path / "out")
    stats = worker(config, out, prompts).render_shard(ShardPlan(0, prompts, 0, 3, 4))
    assert (stats.shard, stats.rows, stats.images, stats.rendered, stats.failed, stats.retryable) == \
        ("000000", 3, 4, 3, 1, 0)
    table = read_metadata(Storage(out)).to_pylist()
    rendered = sorted((r["id"], r["seed"]) for r in table if r["error_code"] is None)
    assert rendered == [("r1", 5), ("r1", 6), ("r2", 9)]
    assert [r["error_code"] for r in table if r["id"] == "r3"] == [ErrorCode.EMPTY_PROMPT.value]
    assert all(Storage(out).exists(r["path"]) and r["path"].startswith("images/000000/") for r in table if r["path"])


def test_a_slice_of_the_input_is_read_across_row_groups(tmp_path, prompts):
    config, out = config_file(tmp_path, "fake:flux"), str(tmp_path / "out")
    stats = worker(config, out, prompts).render_shard(ShardPlan(3, prompts, 1, 3, 2))
    assert stats.shard == "000003" and stats.rows == 2
    assert sorted({r["id"] for r in read_metadata(Storage(out)).to_pylist()}) == ["r2", "r3"]


def test_a_model_that_failed_to_load_is_rendered_by_the_redo_once_fixed(tmp_path, prompts):
    out, plan = str(tmp_path / "out"), ShardPlan(0, prompts, 0, 3, 4)
    broken = config_file(tmp_path, str(tmp_path / "no-such-weights"))
    stats = worker(broken, out, prompts, "webdataset").render_shard(plan)
    assert (stats.failed, stats.retryable) == (4, 3)
    failed = [r for r in read_metadata(Storage(out)).to_pylist() if r["error_code"] == "model_load_failed"]
    assert len(failed) == 3 and "cannot load model flux-schnell" in failed[0]["error"]
    fixed = config_file(tmp_path, "fake:flux")
    again = worker(fixed, out, prompts, "webdataset").render_shard(plan, redo=True)
    assert (again.rendered, again.failed, again.retryable, again.kept, again.kept_failed) == (3, 1, 0, 1, 1)
    assert read_stats(Storage(out))["000000"] == again


def test_identical_rows_without_ids_are_two_images(tmp_path):
    prompts = tmp_path / "same.parquet"
    pq.write_table(pa.table({"prompt": ["a fox", "a fox"]}), prompts)
    config, out = config_file(tmp_path, "fake:flux"), str(tmp_path / "out")
    stats = worker(config, out, str(prompts)).render_shard(ShardPlan(0, str(prompts), 0, 2, 2))
    table = read_metadata(Storage(out)).to_pylist()
    assert stats.rendered == 2 and len({r["key"] for r in table}) == 2 and len({r["seed"] for r in table}) == 2
