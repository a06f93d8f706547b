"""The end-of-run sweep of staging files (`jobs.output.shard_writer.remove_staging`) at 10x and 100x the shards.

    .venv/bin/python -m bench.staging [--shards 300,3000,30000]

A webdataset output of N committed shards (N tar, metadata and stats files; at 1000 images a
shard: 300k, 3M and 30M images) with 3 staging files that killed writers left; times the sweep
the driver runs once every shard is in (it lists the flat folders once: its cost grows with the
shards, never with the images). Files are empty: the sweep reads names only.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from cluster.storage.results import Storage
from jobs.output.shard_writer import remove_staging


def output_of(root: Path, shards: int) -> Storage:
    for folder, suffix in (("shards", "tar"), ("metadata", "parquet"), ("stats", "json")):
        (root / folder).mkdir(parents=True)
        for index in range(shards):
            (root / folder / f"{index:06d}.{suffix}").touch()
    for stale in ("shards/.000003.tar.0badc0de.tmp", "metadata/.000003.parquet.0badc0de.tmp", ".manifest.json.1.tmp"):
        (root / stale).touch()
    return Storage(str(root))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", default="300,3000,30000")
    args = parser.parse_args()
    base = None
    for shards in (int(n) for n in args.shards.split(",")):
        storage = output_of(Path(tempfile.mkdtemp(prefix="raydiant-staging-")), shards)
        started = time.perf_counter()
        removed = remove_staging(storage, "webdataset")
        took = (time.perf_counter() - started) * 1000
        base = base or took
        print(f"{shards:>6} shards ({shards * 1000:>10,} images): removed {removed} in {took:.2f} ms "
              f"({took / base:.1f}x the first)")


if __name__ == "__main__":
    main()
