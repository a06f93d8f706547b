"""Ray and processes on a machine: a private local Ray head, processes stopped by id with
watchdogs, and where render work is placed from the cluster's resources.

May import: cluster.spec, cluster.storage (atomic local files). The root command is
`cluster/cli.py`."""
