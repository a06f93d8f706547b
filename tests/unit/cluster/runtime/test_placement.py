"""The placement rule of render actors (cluster/runtime/placement.py): from the cluster's GPUs, never
the driver's."""

from __future__ import annotations

import pytest

from cluster.runtime.placement import ActorPool, GpuCapacity, missing_gpus, plan_actor_pool, unschedulable


@pytest.mark.parametrize(("capacity", "gpus", "concurrency", "expected"), [
    (GpuCapacity(0, 0), None, None, (0, 1, 1)),  # a CPU cluster: one CPU actor, as before
    (GpuCapacity(0, 0), None, (2, 3), (0, 2, 3)),
    (GpuCapacity(1, 1), None, None, (1, 1, 1)),  # one GPU node
    (GpuCapacity(16, 16), None, None, (1, 16, 16)),  # every GPU from the start, with no flag
    (GpuCapacity(2, 8), None, None, (1, 2, 8)),  # the GPUs there are, then what the autoscaler adds
    (GpuCapacity(0, 8), None, None, (1, 1, 8)),  # scaled to zero: still GPU actors, never CPU ones
    (GpuCapacity(0, None), None, None, (1, 1, 1)),  # unbounded autoscaler: GPU actors, grow with --concurrency
    (GpuCapacity(16, 16), None, (2, 4), (1, 2, 4)),  # the user caps it
    (GpuCapacity(8, 8), 2, None, (2, 4, 4)),  # two GPUs per actor
    (GpuCapacity(8, 8), 0, None, (0, 1, 1)),  # CPU actors on a GPU cluster, when asked
])
def test_pool_from_cluster_gpus(capacity, gpus, concurrency, expected):
    pool = plan_actor_pool(capacity, gpus, concurrency)
    assert (pool.gpus_per_worker, pool.min_workers, pool.max_workers) == expected
    assert pool.describe().startswith("render actors:")


def test_cpu_actors_leave_a_cpu_for_reading():
    pool = plan_actor_pool(GpuCapacity(0, 0), None, (4, 4), cpus=4)
    assert (pool.min_workers, pool.max_workers) == (3, 3) and "reading the input" in pool.why
    assert plan_actor_pool(GpuCapacity(0, 0), None, None, cpus=1).max_workers == 1  # never below one
    assert plan_actor_pool(GpuCapacity(2, 2), None, None, cpus=2).max_workers == 2  # GPU actors: not capped


def test_models_needing_gpus_the_cluster_cannot_have_are_named():
    needs = {"flux-schnell": 1.0, "stable-diffusion-xl": 0.0}
    assert missing_gpus(needs, GpuCapacity(2, 2)) == []
    assert missing_gpus(needs, GpuCapacity(0, 4)) == []  # the autoscaler will add them
    assert missing_gpus(needs, GpuCapacity(0, None)) == []
    (problem,) = missing_gpus(needs, GpuCapacity(0, 0))
    assert problem.startswith("model flux-schnell: each replica needs 1 GPU(s), but the cluster has 0")


def test_gpu_actors_hold_no_cpu_so_one_cpu_per_gpu_nodes_can_still_read():
    # A CPU-less head and two nodes of 1 GPU + 1 CPU: actors holding a CPU each would starve the read.
    pool = plan_actor_pool(GpuCapacity(2, 2, largest_node=1), cpus=2)
    assert (pool.gpus_per_worker, pool.cpus_per_worker, pool.max_workers) == (1, 0, 2)
    assert unschedulable(pool, GpuCapacity(2, 2, largest_node=1), cpus=2) is None


@pytest.mark.parametrize(("pool", "capacity", "cpus", "words"), [
    (ActorPool(1, 1, 2, "x", cpus_per_worker=0), GpuCapacity(2, 2, largest_node=1), 0, "the cluster has none"),
    (ActorPool(0, 1, 1, "x"), GpuCapacity(0, 0), 1, "reading the input needs another, but the cluster has 1"),
    (ActorPool(2, 1, 1, "x", cpus_per_worker=0), GpuCapacity(4, 4, largest_node=1), 4,
     "needs 2 GPU(s) on one node, but the largest node has 1"),
])
def test_a_plan_that_could_never_run_is_refused_with_what_is_missing(pool, capacity, cpus, words):
    assert words in unschedulable(pool, capacity, cpus)


def test_a_job_through_serve_holds_nothing():
    pool = ActorPool(0, 4, 4, "through Serve", cpus_per_worker=0)
    assert unschedulable(pool, GpuCapacity(0, 0), cpus=2) is None
