"""Service metrics, exported through Ray's metrics agent (Prometheus format), so Ray's
dashboards and any Prometheus scraping the cluster see them."""

from __future__ import annotations

from ray.util.metrics import Counter, Gauge, Histogram

images_rendered = Counter("raydiant_images_rendered", "Images rendered successfully.", tag_keys=("model",))
images_failed = Counter("raydiant_images_failed", "Images that failed.", tag_keys=("model", "code"))
render_latency_s = Histogram(
    "raydiant_task_render_seconds", "Seconds from dispatch to results, per task.",
    boundaries=[0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300], tag_keys=("model",))
task_store_full = Counter("raydiant_task_store_full", "Submissions refused: the task store was at its bound.",
                          tag_keys=("model",))
task_store_fullness = Gauge("raydiant_task_store_fullness",
                            "Used over the bound of the task store's memory (Redis maxmemory); new tasks "
                            "are refused from 0.9 on.")
queue_depth = Gauge("raydiant_queue_depth", "Tasks waiting for a model replica.", tag_keys=("model",))
