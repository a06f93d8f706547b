"""A shard's commit from its units' parts (jobs/output/assembly.py), run again as Ray runs a task
again after its worker died: at any point, the shard holds each image once."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from cluster.storage.results import Storage
from jobs.driver.plan import ShardPlan
from jobs.driver.spec import RowDefaults
from jobs.output.assembly import commit_shard
from jobs.output.layout import read_metadata
from jobs.output.unit_part import PARTS, part_key
from jobs.worker.unit_worker import UnitWorker
from jobs.worker.units import read_units

ROWS = [{"id": f"r{i}", "prompt": f"prompt {i}", "seed": i} for i in range(5)]


@pytest.fixture
def rendered(tmp_path):
    """Five rows in units of two images, every unit's part written, the shard not committed."""
    prompts = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), prompts)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"models": {"flux-schnell": {"source": "fake:flux", "warmup": False}}}))
    worker = UnitWorker(str(config), str(tmp_path / "out"), "png", batch_size=2, job_seed=0,
                        defaults=RowDefaults(width=256, height=256, steps=1))
    plan = ShardPlan(0, str(prompts), 0, 5, 5)
    units = [o["unit"] for o in read_units({"plan": plan, "redo": False}, str(prompts), 2, 1)]
    for unit in units:
        worker.render_unit(unit)
    return worker.storage, plan, [u.name for u in units], worker, units


def keys(storage: Storage) -> list[str]:
    return sorted(read_metadata(storage).column("key").to_pylist())


@pytest.mark.parametrize("fmt", ["files", "webdataset", "parquet"])
def test_a_commit_run_again_after_it_removed_some_parts_answers_its_stats(rendered, fmt):
    storage, plan, units, *_ = rendered
    assert len(units) == 3
    stats = commit_shard(storage, fmt, "png", plan, units, redo=False)
    assert (stats.images, stats.rendered) == (5, 5) and not storage.exists(PARTS + "/000000")
    storage.write(part_key(plan.name, units[0]), storage.read(f"metadata/{plan.name}.parquet"))  # one part left
    assert commit_shard(storage, fmt, "png", plan, units, redo=False) == stats
    assert len(keys(storage)) == 5


def test_a_redo_commit_run_again_after_committing_holds_each_image_once(rendered):
    """A redo commit that died after its stats, before removing its parts: run again, it carries
    over from the shard it wrote itself, and the parts' images are not there twice."""
    storage, plan, units, worker, unit_plans = rendered
    commit_shard(storage, "webdataset", "png", plan, units[:2], redo=False)  # as if the last unit were not done
    assert len(keys(storage)) == 4
    worker.render_unit(unit_plans[2])  # the redo renders it
    assert commit_shard(storage, "webdataset", "png", plan, units[2:], redo=True).images == 5
    worker.render_unit(unit_plans[2])  # its part back, as if the commit had died before removing it
    again = commit_shard(storage, "webdataset", "png", plan, units[2:], redo=True)
    assert again.images == 5 and keys(storage) == sorted(set(keys(storage)))


def test_a_missing_part_of_an_uncommitted_shard_is_an_error(rendered):
    storage, plan, units, *_ = rendered
    storage.fs.rm(storage.path(part_key(plan.name, units[1])))
    with pytest.raises(FileNotFoundError, match="part is missing"):
        commit_shard(storage, "files", "png", plan, units, redo=False)
