"""The batch job's read and render stages: shards cut into work units with their input rows
(`units.py`), rows expanded into images (`rows.py`), units rendered and written as parts
(`unit_worker.py`), in-process or through a running service's replicas (`served.py`).

May import: cluster, jobs.output."""
