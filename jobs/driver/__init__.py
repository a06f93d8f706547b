"""The batch job's driver: the job spec, the shard plan, the Ray Data pipeline, progress, the
manifest and the terminal. It holds per-shard state only as Ray Data blocks, never per image.

May import: cluster, jobs.worker, jobs.output."""
