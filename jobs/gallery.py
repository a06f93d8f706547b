"""`raydiant gallery OUTPUT`: static HTML pages beside a batch job's output, to look at a sample
of a dataset without code.

Reads the metadata table (the commit record, one row per image) and each image from whichever
format the job wrote (files, webdataset shards, parquet parts). Writes small JPEG thumbnails
under `gallery/thumbs/`, named by image key (a rerun overwrites them), and pages of
`page_size` images: `index.html`, `index-2.html`, ... Every text from the data is escaped.
"""

from __future__ import annotations

import html
import io
import tarfile
from dataclasses import dataclass
from typing import Any, Iterator

import pyarrow.parquet as pq
from PIL import Image

from cluster.storage.results import Storage
from jobs.output.layout import read_stats
from jobs.worker.rows import sample_name

THUMB_SIDE = 256


@dataclass(frozen=True)
class GallerySummary:
    pages: list[str]  # storage keys of the pages written, first is index.html
    images: int  # shown (rendered)
    failed: int  # shown as errors
    rows_in_output: int


class _ImageReader:
    """Image bytes by metadata row, whatever the format. Rows come sorted by path, so one shard
    or part is held at a time and each is read once."""

    def __init__(self, storage: Storage):
        self.storage = storage
        self._shards: dict[str, dict[str, bytes]] = {}

    def read(self, row: dict[str, Any]) -> bytes:
        path = row["path"]
        if "#" in path:  # webdataset: shards/<shard>.tar#<sample>.<ext>
            shard, member = path.split("#", 1)
            if shard not in self._shards:
                with tarfile.open(fileobj=io.BytesIO(self.storage.read(shard))) as tar:
                    self._shards = {shard: {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}}
            return self._shards[shard][member]
        if path.endswith(".parquet"):  # parquet: data/<shard>.parquet, `image` as {bytes, path}
            if path not in self._shards:
                table = pq.read_table(self.storage.path(path), filesystem=self.storage.fs, columns=["key", "image"])
                self._shards = {path: {key: image["bytes"] for key, image in
                                       zip(table.column("key").to_pylist(), table.column("image").to_pylist())}}
            return self._shards[path][row["key"]]
        return self.storage.read(path)  # files: images/<shard>/<sample>.<ext>


def _first_rows(storage: Storage, shards: list[str], limit: int | None) -> Iterator[dict[str, Any]]:
    """Metadata rows in shard order, reading only the shards the first `limit` rows are in."""
    count = 0
    for name in shards:
        for row in pq.read_table(storage.path(f"metadata/{name}.parquet"), filesystem=storage.fs).to_pylist():
            if limit and count >= limit:
                return
            count += 1
            yield row


def write_gallery(output: str, page_size: int = 100, limit: int | None = 1000) -> GallerySummary:
    """Write the pages for the first `limit` images of `output` (all of them when None)."""
    if page_size < 1:
        raise ValueError("page_size must be at least 1")
    storage = Storage(output)
    committed = read_stats(storage)
    rows = list(_first_rows(storage, sorted(committed), limit))
    if not rows:
        raise FileNotFoundError(f"{output} has no batch job metadata (metadata/*.parquet)")
    shown = rows[:limit] if limit else rows
    # Grouped by the file they live in, so each shard is read once.
    reader = _ImageReader(storage)
    for row in sorted((r for r in shown if r["error"] is None and r["path"]), key=lambda r: r["path"]):
        storage.write(_thumb_key(row), _thumbnail(reader.read(row)))
    pages = [shown[i: i + page_size] for i in range(0, len(shown), page_size)]
    names = [_page_name(i) for i in range(len(pages))]
    for number, page in enumerate(pages):
        storage.write(names[number], _page_html(page, number, names, len(rows), len(shown)).encode())
    failed = sum(1 for r in shown if r["error"] is not None)
    return GallerySummary(pages=names, images=len(shown) - failed, failed=failed, rows_in_output=sum(s.images for s in committed.values()))


def _page_name(number: int) -> str:
    return "index.html" if number == 0 else f"index-{number + 1}.html"


def _thumb_key(row: dict[str, Any]) -> str:
    return f"gallery/thumbs/{sample_name(row['key'])}.jpg"


def _thumbnail(data: bytes) -> bytes:
    with Image.open(io.BytesIO(data)) as image:
        image = image.convert("RGB")
        image.thumbnail((THUMB_SIDE, THUMB_SIDE))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=85)
        return buffer.getvalue()


def _cell(row: dict[str, Any]) -> str:
    e = html.escape
    size = f"{row['width']}*{row['height']}"
    if row["error"] is not None:
        picture = f'<div class="error">{e(row["error"])}</div>'
    else:
        picture = f'<a href="{e(row["path"].split("#", 1)[0])}"><img src="{e(_thumb_key(row))}" ' \
                  f'alt="seed {row["seed"]}" loading="lazy"></a>'
    negative = f'<p class="neg">not: {e(row["negative_prompt"])}</p>' if row["negative_prompt"] else ""
    return (f'<figure class="{"failed" if row["error"] else "ok"}">{picture}<figcaption>'
            f'<p class="prompt">{e(row["prompt"] or "")}</p>{negative}'
            f'<p class="meta">seed {row["seed"]} · {size} · {row["steps"]} steps · {e(row["model"] or "")}'
            f' · {e(str(row["id"]))}#{row["index"]}</p></figcaption></figure>')


def _page_html(page: list[dict[str, Any]], number: int, names: list[str], total: int, shown: int) -> str:
    links = []
    if number > 0:
        links.append(f'<a class="prev" href="{names[number - 1]}">previous</a>')
    links.append(f"page {number + 1} of {len(names)}")
    if number + 1 < len(names):
        links.append(f'<a class="next" href="{names[number + 1]}">next</a>')
    nav = f'<nav>{" · ".join(links)}</nav>'
    note = f"{shown} of {total} images shown" if shown < total else f"{total} images"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>raydiant gallery · page {number + 1}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1rem 2rem; background: #f6f6f8; color: #1d1d1f; }}
.grid {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(220px, 1fr)); gap: 1rem; }}
figure {{ margin: 0; background: #fff; border: 1px solid #ddd; border-radius: 8px; padding: 0.5rem; }}
img {{ width: 100%; aspect-ratio: 1; object-fit: cover; border-radius: 4px; }}
.error {{ aspect-ratio: 1; display: flex; align-items: center; justify-content: center; color: #b00020;
          background: #fde8ea; border-radius: 4px; padding: 0.5rem; font-size: 0.85rem; }}
.prompt {{ margin: 0.3rem 0; font-size: 0.9rem; }} .neg, .meta {{ margin: 0; color: #666; font-size: 0.8rem; }}
nav {{ margin: 1rem 0; }}
</style></head>
<body><h1>raydiant gallery</h1><p>{note}</p>{nav}
<div class="grid">
{chr(10).join(_cell(row) for row in page)}
</div>{nav}</body></html>
"""
