"""The batch job's render actors: input rows expanded into images (`rows.py`), shards rendered
and committed (`shard_worker.py`), in-process or through a running service's replicas
(`served.py`).

May import: cluster, jobs.output."""
