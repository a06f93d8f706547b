"""Batch input files (serve/files/store.py) at 1x, 10x and 100x: an upload's copy-and-check rate
and the most memory it holds, and a list page's cost as a key's folder fills.

    .venv/bin/python -m bench.files [--lines 500,5000,50000] [--kept 5,50,500]

Uploads are JSONL of image-generation lines (about 200 bytes each, so 50,000 lines is OpenAI's
largest line count at about 10 MB), copied from a spooled file into a local storage through every
check (bytes, lines, line length, UTF-8). Peak memory is Python's own allocations during the copy
(tracemalloc): a streamed copy holds about one chunk (1 MiB) whatever the file's size. A list page
(10 newest) is timed with a key keeping `kept` files: one listing of its folder, and the page's
10 records read.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import tempfile
import time
import tracemalloc

from cluster.storage.results import Storage
from serve.files.store import BatchFiles, FileLimits

LIMITS = FileLimits(max_bytes=200 * 1024 * 1024, max_lines=1_000_000, max_line_bytes=1 << 20, max_per_key=10_000,
                    retention_s=86400)


def jsonl(lines: int) -> bytes:
    line = {"custom_id": "line-000000", "method": "POST", "url": "/v1/images/generations",
            "body": {"model": "flux-schnell", "prompt": "a lighthouse at dusk, oil on canvas", "size": "1024x1024"}}
    return (json.dumps(line) + "\n").encode() * lines


def upload_figures(files: BatchFiles, lines: int) -> tuple[float, float, float]:
    """(MB, MB/s, peak MiB held) of one upload."""
    spooled = tempfile.TemporaryFile()  # what the multipart parser hands over past 1 MiB
    spooled.write(jsonl(lines))
    size = spooled.tell()
    spooled.seek(0)
    tracemalloc.start()
    started = time.perf_counter()
    created = files.create("bench-key", spooled, "in.jsonl", "batch")
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert created.bytes == size, created
    return size / 1e6, size / 1e6 / elapsed, peak / 2**20


def page_ms(files: BatchFiles, key: str, repeat: int = 20) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        page, _ = files.page(key, 10, None, newest_first=True)
        times.append((time.perf_counter() - started) * 1000)
        assert len(page) == 10
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", default="500,5000,50000")
    parser.add_argument("--kept", default="10,100,1000")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        files = BatchFiles(Storage(f"{root}/store"), LIMITS)
        print("upload (copy through every check into local storage):")
        for lines in (int(n) for n in args.lines.split(",")):
            size, rate, peak = upload_figures(files, lines)
            print(f"  {lines:>7} lines  {size:7.1f} MB  {rate:7.1f} MB/s  peak memory {peak:5.2f} MiB")
        print("list page of 10, newest first (median of 20):")
        small = io.BytesIO(jsonl(1).strip() + b"\n")
        for kept in (int(n) for n in args.kept.split(",")):
            key = f"key-{kept}"
            for _ in range(kept):
                small.seek(0)
                files.create(key, small, "one.jsonl", "batch")
            print(f"  {kept:>6} files kept  {page_ms(files, key):6.2f} ms")


if __name__ == "__main__":
    main()
