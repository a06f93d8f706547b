"""`raydiant gallery OUTPUT` over every output format: pages with thumbnails, prompts, seeds,
sizes and errors, paged; opened in the headless Chromium of the page tests."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest
from PIL import Image
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from cluster.spec.errors import ErrorCode, RenderError
from cluster.spec.request import ResolvedRequest
from cluster.storage.results import Storage
from jobs.driver.plan import ShardPlan
from jobs.gallery import write_gallery
from jobs.output.shard_writer import ShardWriter
from jobs.output.unit_part import outcome_row
from jobs.worker.rows import WorkItem
from tests.conftest import shot

COLOURS = [(200, 40, 40), (40, 160, 60), (40, 70, 200), (220, 180, 30), (120, 40, 160)]


def png(colour) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def job_output(root, fmt: str) -> str:
    """What a batch job leaves: 5 rendered images (one with a hostile prompt) and 1 failed, in two
    shards."""
    items = []
    for i in range(5):
        request = ResolvedRequest(model="flux-schnell", prompt=f"colour {i} <script>alert(1)</script>",
                                  negative_prompt="blur" if i == 0 else None, width=64, height=48, steps=2,
                                  guidance=3.5, seed=100 + i, n=1, add_sampling_metadata=True)
        items.append(WorkItem(f"row{i}/0", f"row{i}", 0, "flux-schnell", request.prompt, request))
    refused = WorkItem("row9/0", "row9", 0, "flux-schnell", "too long", None,
                       RenderError(ErrorCode.INVALID_PARAMETER, "10*10 is not allowed", "size"))
    output = str(root / fmt)
    for index, shard in enumerate([items[:3], items[3:] + [refused]]):
        writer = ShardWriter(Storage(output), fmt, "png", ShardPlan(index, "in.parquet", 0, len(shard), len(shard)))
        for item in shard:
            image = png(COLOURS[int(item.id[3:])]) if item.error is None else None
            writer.place(outcome_row(item, writer.plan.name, image, item.error, 0.1), image)
        writer.commit()
    return output


@pytest.mark.parametrize("fmt", ["files", "webdataset", "parquet"])
def test_gallery_reads_every_format(tmp_path, fmt):
    output = job_output(tmp_path, fmt)
    summary = write_gallery(output, page_size=4)
    assert (summary.images, summary.failed, summary.pages) == (5, 1, ["index.html", "index-2.html"])
    first = (tmp_path / fmt / "index.html").read_text()
    assert "colour 0 &lt;script&gt;" in first and "<script>alert" not in first  # data is escaped
    assert "seed 100 · 64*48 · 2 steps" in first and 'href="index-2.html"' in first
    second = (tmp_path / fmt / "index-2.html").read_text()
    assert "size 10*10 is not allowed" in second and 'href="index.html"' in second
    thumbs = sorted(p.name for p in (tmp_path / fmt / "gallery" / "thumbs").iterdir())
    assert thumbs == [f"row{i}_0.jpg" for i in range(5)]
    with Image.open(tmp_path / fmt / "gallery" / "thumbs" / "row2_0.jpg") as thumb:
        assert thumb.getpixel((10, 10))[2] > 150  # row 2's blue, from its own image


def test_cli_names_a_missing_output(tmp_path):
    ran = subprocess.run([sys.executable, "-m", "cluster.cli", "gallery", str(tmp_path / "nothing")],
                         capture_output=True, text=True, timeout=120)
    assert ran.returncode != 0 and "has no batch job metadata" in ran.stdout + ran.stderr


def test_gallery_page_in_chromium(tmp_path, browser):
    output = job_output(tmp_path, "webdataset")
    ran = subprocess.run([sys.executable, "-m", "cluster.cli", "gallery", output, "--page-size", "4"],
                         capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0 and "5 images, 1 errors on 2 page(s)" in ran.stdout, ran.stderr
    browser.get(f"file://{output}/index.html")
    # Thumbnails load lazily, after the page's load event: wait until each has loaded or failed.
    WebDriverWait(browser, 30, poll_frequency=0.05).until(
        lambda driver: driver.execute_script("return [...document.images].every(i => i.complete)"))
    loaded = browser.execute_script(
        "return [...document.images].map(i => i.complete && i.naturalWidth > 0)")
    assert loaded == [True] * 4
    captions = [p.text for p in browser.find_elements(By.CSS_SELECTOR, "p.meta")]
    assert captions[0].startswith("seed 100 · 64*48")
    shot(browser, "batch-gallery.png")
    browser.find_element(By.CSS_SELECTOR, "a.next").click()
    assert "is not allowed" in browser.find_element(By.CSS_SELECTOR, ".error").text
    assert browser.current_url.endswith("index-2.html")
