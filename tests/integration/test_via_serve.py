"""`raydiant render --via-serve`: a batch job rendering through a running Serve app's replicas."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cluster.engine import Renderer
from cluster.request import RenderRequest
from cluster.storage import Storage
from jobs.output import read_metadata
from tests.conftest import pixels
from tests.servers import raydiant_service

CONFIG = """
models:
  flux-schnell: {{source: "tiny:flux", warmup: false}}
tasks: {{path: "{work}/tasks.sqlite"}}
storage: {{root: "{work}/results", signing_key_file: "{work}/signing.key"}}
"""


def test_job_renders_through_running_service(tmp_path, local_config):
    pq.write_table(pa.table({"id": ["a", "b"], "prompt": ["a fox", "a cat"], "seed": [3, 8], "n": [2, 1]}),
                   tmp_path / "in.parquet")
    with raydiant_service(tmp_path / "svc", CONFIG.format(work=tmp_path / "svc")):
        address = None
        for _ in range(60):  # the line follows right after the app is up
            if found := re.search(r"Ray cluster: (\S+)", (tmp_path / "svc" / "serve.log").read_text()):
                address = found.group(1)
                break
            time.sleep(0.5)
        assert address, "raydiant serve did not print its Ray cluster address"
        wrong = subprocess.run([str(Path(sys.executable).parent / "raydiant"), "render", "--via-serve", "--serve-app",
                                "nope", "--address", address, "-i", str(tmp_path / "in.parquet"), "-o",
                                str(tmp_path / "wrong")], capture_output=True, text=True, timeout=300,
                               env=os.environ | {"RAY_AUTH_MODE": "token"})
        assert wrong.returncode == 2, wrong.stderr[-3000:]
        assert "no Serve application 'nope' on this cluster; applications there: raydiant" in wrong.stderr
        job = subprocess.run([str(Path(sys.executable).parent / "raydiant"), "render", "--via-serve",
                              "--address", address, "-i", str(tmp_path / "in.parquet"), "-o", str(tmp_path / "out"),
                              "--size", "256*256", "--steps", "2"],
                             capture_output=True, text=True, timeout=300,
                             env=os.environ | {"RAY_AUTH_MODE": "token"})  # Ray's default token auth
    assert job.returncode == 0, job.stderr[-3000:]
    rows = sorted(read_metadata(Storage(str(tmp_path / "out"))).to_pylist(), key=lambda r: (r["id"], r["index"]))
    assert [(r["id"], r["index"], r["seed"]) for r in rows] == [("a", 0, 3), ("a", 1, 4), ("b", 0, 8)]
    renderer = Renderer(local_config.spec("flux-schnell").model_copy(update={"warmup": False}), device="cpu")
    for row in rows:
        [single] = renderer.render([RenderRequest(model="flux-schnell", prompt=row["prompt"], seed=row["seed"],
                                                  width=256, height=256, steps=2)])
        assert np.array_equal(pixels((tmp_path / "out" / row["path"]).read_bytes()), pixels(single.image))
