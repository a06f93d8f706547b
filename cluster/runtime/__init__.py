"""Ray and processes on a machine: a private local Ray head, processes stopped by id with
watchdogs, and where render work is placed from the cluster's resources.

May import: cluster.spec. The root command is `cluster/cli.py`."""
