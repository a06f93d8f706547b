"""The render actor (jobs/worker.py) without Ray: work items in, images and metadata committed,
with the FAKE engine (solid colours, no model). A model that fails to load gives retryable error
rows, so a rerun after the source is fixed renders them."""

from __future__ import annotations

import pandas as pd
import yaml

from cluster.config import load_config
from cluster.errors import ErrorCode
from cluster.storage import Storage
from jobs.output import committed_keys, read_metadata
from jobs.rows import expand_batch
from jobs.spec import RowDefaults
from jobs.worker import RenderWorker


def config_file(tmp_path, source: str):
    path = tmp_path / f"config-{abs(hash(source))}.yaml"
    path.write_text(yaml.safe_dump({"models": {"flux-schnell": {"source": source, "warmup": False}}}))
    return str(path)


def work(config: str, done: frozenset[str] = frozenset()) -> pd.DataFrame:
    rows = pd.DataFrame([{"id": "r1", "prompt": "a cat", "seed": 5, "n": 2},
                         {"id": "r2", "prompt": "a dog", "seed": 9, "n": 1},
                         {"id": "r3", "prompt": None}])
    return expand_batch(rows, load_config(config).specs(),
                        RowDefaults(model="flux-schnell", width=256, height=256, steps=1), 0, done)


def test_items_are_rendered_and_committed_with_their_seeds(tmp_path):
    config = config_file(tmp_path, "fake:flux")
    out = str(tmp_path / "out")
    answer = RenderWorker(config, out, "files", batch_size=4)(work(config))
    assert answer["error_code"].fillna("").tolist() == ["", "", "", ErrorCode.EMPTY_PROMPT.value]
    table = read_metadata(Storage(out)).to_pylist()
    rendered = sorted((r["id"], r["seed"]) for r in table if r["error_code"] is None)
    assert rendered == [("r1", 5), ("r1", 6), ("r2", 9)]
    assert all(Storage(out).exists(r["path"]) for r in table if r["path"])


def test_a_model_that_failed_to_load_is_rendered_by_a_rerun_once_fixed(tmp_path):
    out = str(tmp_path / "out")
    broken = config_file(tmp_path, str(tmp_path / "no-such-weights"))
    RenderWorker(broken, out, "files", batch_size=4)(work(broken))
    table = read_metadata(Storage(out)).to_pylist()
    failed = [r for r in table if r["error_code"] == ErrorCode.MODEL_LOAD_FAILED.value]
    assert len(failed) == 3 and "cannot load model flux-schnell" in failed[0]["error"]
    done = committed_keys(Storage(out))
    assert len(done) == 1  # only the row without a prompt is final
    fixed = config_file(tmp_path, "fake:flux")
    again = RenderWorker(fixed, out, "files", batch_size=4)(work(fixed, done))
    assert len(again) == 3 and again["error_code"].isna().all()
