"""The batch job on a real multi-node Ray cluster (tests/multinode.py): render actors placed on
GPU nodes by the cluster's resources, and a worker node killed (not drained) while its actor is
mid-shard, with and without a replacement node. Every input image must come out exactly once
in every format, as that format's own reader sees it.

One cluster for the module: a head without CPUs and GPU-advertising workers (at most 4 raylets
at once). Each scenario kills one node; the next one adds a node back.
"""

from __future__ import annotations

import io
import os
import tarfile
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cluster.doubles.simulated_gpu import read_busy_intervals
from cluster.storage.results import Storage
from jobs.driver.job import JobSummary, run_job
from jobs.driver.spec import JobSpec
from jobs.output.layout import read_metadata, read_stats
from tests.multinode import local_cluster, wait_until

ROWS = 24
RENDER_ACTOR = "UnitWorker"
SHARD_SIZE = 4  # 6 shards of 2 units each: both actors get several, and a kill lands mid-job
UNIT_SIZE = 2  # units smaller than shards: a shard is assembled from units of both actors


# A SIMULATED GPU that logs its batches (to $RAYDIANT_SIM_DIR, one file per pipeline): which
# render actors did work, whatever Ray Data reports.
SIMULATED = "models:\n  flux-schnell: {source: 'sim:flux', simulated: {base_s: 0.1, per_image_s: 0.05}}\n"


@pytest.fixture(scope="module")
def sim_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("multinode-sim")


@pytest.fixture(scope="module")
def cluster(sim_dir):
    before = os.environ.get("RAYDIANT_SIM_DIR")
    os.environ["RAYDIANT_SIM_DIR"] = str(sim_dir)  # the raylets, so their workers, inherit it
    try:
        with local_cluster() as running:
            running.add_worker(num_cpus=2, num_gpus=1)
            running.add_worker(num_cpus=2, num_gpus=1)
            running.wait_for_nodes()
            yield running
    finally:
        os.environ.pop("RAYDIANT_SIM_DIR") if before is None else os.environ.update(RAYDIANT_SIM_DIR=before)


@pytest.fixture(scope="module")
def prompts(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("multinode-input") / "prompts.parquet"
    pq.write_table(pa.table({"id": [f"row{i:02d}" for i in range(ROWS)],
                             "prompt": [f"prompt number {i}" for i in range(ROWS)]}), path)
    return path


def spec(prompts: Path, output: Path, fmt: str) -> JobSpec:
    return JobSpec(input=str(prompts), output=str(output), format=fmt, batch_size=2, shard_size=SHARD_SIZE,
                   unit_size=UNIT_SIZE, seed=7,
                   defaults={"model": "flux-schnell", "width": 256, "height": 256, "steps": 2})


def images_as_read(storage: Storage, fmt: str) -> list[str]:
    """Every image key as the format's own reader sees it: files, tar samples, parquet rows
    (`shards/*.tar` and `data/*.parquet`, as readers glob them)."""
    if fmt == "files":  # images/<shard>/<sample>.png, beside each folder's metadata.parquet
        return sorted(p.rsplit("/", 1)[1][:-len(".png")].replace("_", "/", 1)
                      for p in storage.fs.find(storage.path("images")) if p.endswith(".png"))
    if fmt == "webdataset":
        keys = []
        for shard in storage.fs.glob(storage.path("shards") + "/*.tar"):
            with tarfile.open(fileobj=io.BytesIO(storage.fs.cat_file(shard))) as tar:
                keys += [m.name[:-len(".png")] for m in tar.getmembers() if m.name.endswith(".png")]
        return sorted(k.replace("_", "/") for k in keys)
    keys = []
    for part in storage.fs.glob(storage.path("data") + "/*.parquet"):
        keys += pq.read_table(io.BytesIO(storage.fs.cat_file(part)), columns=["key"]).column("key").to_pylist()
    return sorted(keys)


def run_and_kill(cluster, prompts, output: Path, fmt: str, replace: bool) -> tuple[JobSummary, dict]:
    """Run the job in a thread; once shards commit, SIGKILL a worker node whose render actor is
    alive with work left (so it is mid-shard); optionally add a node back."""
    storage = Storage(str(output))
    outcome: dict = {}

    def job() -> None:
        try:
            outcome["summary"] = run_job(spec(prompts, output, fmt), on_plan=lambda pool: outcome.update(pool=pool))
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            outcome["error"] = exc

    thread = threading.Thread(target=job, daemon=True)
    thread.start()
    wait_until(lambda: len(read_stats(storage)) >= 1, 240, "the first shard committed")
    placed = cluster.actors_by_node(RENDER_ACTOR)
    busy_workers = [node for node in placed if node != cluster.head_id]
    assert busy_workers, f"no render actor on a worker node: {placed}"
    victim = busy_workers[-1]
    committed_at_kill = len(read_stats(storage))
    assert committed_at_kill < ROWS // SHARD_SIZE, "the job finished before the kill: nothing was hit mid-shard"
    cluster.kill_worker(victim)
    if replace:
        cluster.add_worker(num_cpus=2, num_gpus=1)
    thread.join(timeout=400)
    assert not thread.is_alive(), "the job did not finish"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["summary"], {"placed": placed, "victim": victim, "pool": outcome["pool"],
                                "committed_at_kill": committed_at_kill}


def assert_exactly_once(output: Path, fmt: str) -> None:
    storage = Storage(str(output))
    metadata = read_metadata(storage)
    assert sorted(metadata.column("id").to_pylist()) == [f"row{i:02d}" for i in range(ROWS)]  # a row per image
    assert all(e is None for e in metadata.column("error").to_pylist())
    keys = sorted(metadata.column("key").to_pylist())
    assert len(set(keys)) == ROWS
    assert images_as_read(storage, fmt) == keys  # and the format's own reader sees each image once
    for row in metadata.to_pylist():  # no dangling path, no orphan file (images_as_read saw them all)
        assert storage.exists(row["path"].split("#")[0])
    assert sorted(read_stats(storage)) == [f"{i:06d}" for i in range(ROWS // SHARD_SIZE)]  # each shard once
    # The killed node's writer left a hidden staging file (`.000003.tar.<uuid>.tmp`) mid-write;
    # the run removed it once every shard was in.
    assert not [p for p in storage.fs.find(storage.root) if p.rsplit("/", 1)[1].startswith(".")]


def test_render_actors_on_gpu_nodes_only(cluster, prompts, tmp_path):
    summary = run_job(spec(prompts, tmp_path / "placement", "files"))
    assert summary.images == ROWS
    placed = cluster.actors_by_node(RENDER_ACTOR, state="DEAD")  # the job's pool, now finished
    gpu_workers = {n.node_id for n in cluster.workers}
    assert placed and set(placed) <= gpu_workers and cluster.head_id not in placed
    assert len(set(placed)) == 2  # one per GPU node, without any flag


def test_one_shard_spreads_over_every_actor(cluster, prompts, sim_dir, tmp_path):
    """A job of one shard and 2 x actors units: every render actor renders some of it (a shard
    is no longer the unit of work)."""
    config = tmp_path / "simulated.yaml"
    config.write_text(SIMULATED)
    one_shard = spec(prompts, tmp_path / "out", "webdataset").model_copy(
        update={"config": str(config), "shard_size": 1000, "unit_size": ROWS // 4})
    summary = run_job(one_shard)
    assert (summary.images, summary.shards) == (ROWS, 1)
    batches_by_pipeline = [[batch["batch"] for batch in batches] for batches in read_busy_intervals(sim_dir).values()]
    assert len(batches_by_pipeline) == 2, f"{len(batches_by_pipeline)} render actors rendered, not 2"
    assert all(batches for batches in batches_by_pipeline)
    assert sum(map(sum, batches_by_pipeline)) == ROWS  # every image rendered once, on either actor


def test_node_killed_mid_shard_no_replacement(cluster, prompts, tmp_path):
    summary, seen = run_and_kill(cluster, prompts, tmp_path / "out", "webdataset", replace=False)
    pool = seen["pool"]
    assert (pool.gpus_per_worker, pool.min_workers, pool.max_workers) == (1.0, 2, 2)
    assert summary.images == ROWS and summary.failed == 0
    assert_exactly_once(tmp_path / "out", "webdataset")


@pytest.mark.parametrize("fmt", ["parquet", "files"])
def test_node_killed_mid_shard_with_a_replacement(cluster, prompts, tmp_path, fmt):
    if len(cluster.workers) < 2:  # the scenario before left one worker: add one back first
        cluster.add_worker(num_cpus=2, num_gpus=1)
        cluster.wait_for_nodes()
    summary, seen = run_and_kill(cluster, prompts, tmp_path / "out", fmt, replace=True)
    assert summary.images == ROWS and summary.failed == 0
    assert_exactly_once(tmp_path / "out", fmt)
