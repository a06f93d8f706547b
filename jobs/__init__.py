"""Offline: the Ray Data batch render job. `cli.py` and `submit.py` are the commands, `driver/`
plans and runs a job, `worker/` renders shards, `output/` writes them in each format."""
