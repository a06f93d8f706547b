"""Where render work runs: decided from the Ray cluster's resources, never from the driver's.

A job submitted to a cluster runs its driver on the head, which has no GPU; asking the driver
whether CUDA is available would put every render actor on CPUs (or several on one GPU). So the
rules below look at what the cluster advertises now and what its autoscaler can add.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class GpuCapacity:
    now: float  # GPUs the cluster's nodes advertise now
    most: float | None  # GPUs it can reach with its autoscaler (None: no limit is known)
    largest_node: float | None = None  # most GPUs on one node, now or from the autoscaler (None: unknown)

    @property
    def any(self) -> bool:
        return self.now > 0 or self.most is None or self.most > 0


def gpu_capacity() -> GpuCapacity:
    """The connected cluster's GPUs, now and at most (through its autoscaler's node groups)."""
    import ray

    now = float(ray.cluster_resources().get("GPU", 0))
    per_node = [float(node["Resources"].get("GPU", 0)) for node in ray.nodes() if node.get("Alive")]
    groups = _autoscaler_node_groups()
    largest = max(per_node + [gpus for gpus, _ in groups], default=0.0)
    if not groups:
        return GpuCapacity(now, now, largest)  # no autoscaler: what it has is what it gets
    most = 0.0
    for gpus_per_node, max_nodes in groups:
        if gpus_per_node and max_nodes < 0:
            return GpuCapacity(now, None, largest)
        most += gpus_per_node * max_nodes
    return GpuCapacity(now, max(now, most), largest)


def _autoscaler_node_groups() -> list[tuple[float, int]]:
    """(GPUs per node, most nodes) of each autoscaled node group; [] without an autoscaler.
    Read the way Ray Data reads it (ray/data/_internal/cluster_autoscaler/util.py)."""
    try:
        import ray._private.state

        config = ray._private.state.state.get_cluster_config()
    except Exception:  # noqa: BLE001 - no autoscaler, or an older GCS
        return []
    if not config or not config.node_group_configs:
        return []
    return [(float(group.resources.get("GPU", 0)), int(group.max_count)) for group in config.node_group_configs]


@dataclass(frozen=True)
class ActorPool:
    """The batch job's render actors: resources of each, and how far the pool scales."""

    gpus_per_worker: float
    min_workers: int
    max_workers: int
    why: str
    # A CPU renderer holds the CPU it computes on. An actor on a GPU (or one that only waits on a
    # Serve application) holds none: on nodes that advertise one CPU per GPU, a CPU held by each
    # actor would leave none to read the input, and the job would wait forever.
    cpus_per_worker: float = 1.0

    def describe(self) -> str:
        unit = f"{self.gpus_per_worker:g} GPU" if self.gpus_per_worker else (
            "CPU" if self.cpus_per_worker else "no CPU or GPU")
        return f"render actors: {self.min_workers}..{self.max_workers} x {unit} ({self.why})"


def plan_actor_pool(capacity: GpuCapacity, gpus_per_worker: float | None = None,
                    concurrency: tuple[int, int] | None = None, cpus: float | None = None) -> ActorPool:
    """- GPUs per actor: as given, else 1 when the cluster has or can get GPUs, else 0.
    - GPU actors: one per GPU there is now from the start (no GPU waits for the pool to grow),
      growing to as many as the cluster's autoscaler can add, unless `concurrency` says
      otherwise. With no known limit on an autoscaler, the pool stays at the GPUs there are
      now (at least 1) unless `concurrency` allows more.
    - CPU actors: `concurrency`, else 1 (a CPU renderer uses every core it is given), and never
      all of the cluster's `cpus`: each actor holds one, and reading the input needs one too
      (a pool that took them all would wait forever for its input)."""
    gpus = (1.0 if capacity.any else 0.0) if gpus_per_worker is None else gpus_per_worker
    if gpus <= 0:
        low, high = concurrency or (1, 1)
        why = "no GPUs in the cluster" if gpus_per_worker is None else "as asked"
        if cpus is not None and high > max(1, int(cpus) - 1):
            high = max(1, int(cpus) - 1)
            low, why = min(low, high), f"{why}; at most {high}: reading the input needs a CPU of the {cpus:g}"
        return ActorPool(0.0, low, high, why)
    reachable = capacity.most if capacity.most is not None else capacity.now
    by_gpus = max(1, math.floor(reachable / gpus))
    if concurrency is not None:
        low, high = concurrency
        return ActorPool(gpus, min(low, high), high, f"as asked; the cluster can hold {by_gpus}", cpus_per_worker=0.0)
    now = min(by_gpus, max(1, math.floor(capacity.now / gpus)))
    source = "autoscaler" if capacity.most is not None and capacity.most > capacity.now else "cluster"
    return ActorPool(gpus, now, by_gpus, f"{reachable:g} GPUs in the {source}", cpus_per_worker=0.0)


def unschedulable(pool: ActorPool, capacity: GpuCapacity, cpus: float) -> str | None:
    """Why the job could never run on this cluster (it would wait forever), or None. Reading
    and expanding the input take one CPU per task besides what the render actors hold."""
    if cpus < 1:
        return "reading the input needs a CPU, and the cluster has none"
    if pool.cpus_per_worker and cpus < pool.cpus_per_worker + 1:
        return (f"each CPU render actor holds a CPU and reading the input needs another, but the cluster has "
                f"{cpus:g}; add a CPU, or render on GPUs")
    if pool.gpus_per_worker and capacity.largest_node is not None and capacity.largest_node < pool.gpus_per_worker:
        return (f"each render actor needs {pool.gpus_per_worker:g} GPU(s) on one node, but the largest node has "
                f"{capacity.largest_node:g} (now or through the autoscaler)")
    return None


def missing_gpus(needs: dict[str, float], capacity: GpuCapacity) -> list[str]:
    """Why each model whose replicas need GPUs could never be placed on this cluster."""
    reachable = math.inf if capacity.most is None else capacity.most
    return [f"model {model}: each replica needs {gpus:g} GPU(s), but the cluster has {capacity.now:g} "
            f"and its autoscaler can reach {0 if capacity.most is None else capacity.most:g}"
            for model, gpus in needs.items() if gpus > reachable]
