"""The batch render job on real Ray Data (a local cluster in this process)."""

from __future__ import annotations

import json
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cluster.engine.renderer import Renderer
from cluster.runtime.local_ray import connect
from cluster.spec.request import RenderRequest
from cluster.storage.results import Storage
from jobs.driver.job import JobError, run_job
from jobs.driver.spec import JobSpec
from jobs.output.layout import read_metadata
from tests.conftest import pixels


@pytest.fixture(scope="module", autouse=True)
def ray_local():
    with connect(num_cpus=2):
        yield


ROWS = [
    {"id": "a", "prompt": "a lighthouse", "seed": 10, "n": 3, "size": None},
    {"id": "b", "prompt": "a red fox", "seed": None, "n": 1, "size": "256*384"},
    {"id": "c", "prompt": "a castle", "seed": 5, "n": 2, "size": None},
    {"id": "d", "prompt": None, "seed": 1, "n": 1, "size": None},  # bad: no prompt
    {"id": "e", "prompt": "x", "seed": 1, "n": 1, "size": "1000*1000"},  # bad: size not renderable
    {"id": "f", "prompt": "x", "seed": 1, "n": 1, "size": None, "model": "dall-e"},  # bad: unknown model
]


def write_input(path, rows=ROWS) -> str:
    schema = pa.schema([("id", pa.string()), ("prompt", pa.string()), ("seed", pa.int64()), ("n", pa.int64()),
                        ("size", pa.string()), ("model", pa.string())])
    pq.write_table(pa.Table.from_pylist([{k: r.get(k) for k in schema.names} for r in rows], schema=schema), path)
    return str(path)


def job(tmp_path, name: str, **fields) -> JobSpec:
    """A job over the input; on the FAKE engine (solid colours, no model) unless a test renders
    pixels that must match the real pipeline's (then `config=None`: the tiny models)."""
    base = dict(input=str(tmp_path / "in.parquet"), output=str(tmp_path / name), max_errors=10,
                defaults={"width": 256, "height": 256, "steps": 2}, config=fake_config(tmp_path))
    return JobSpec(**(base | fields))


@pytest.fixture
def input_file(tmp_path):
    return write_input(tmp_path / "in.parquet")


def metadata(output: str) -> list[dict]:
    return sorted(read_metadata(Storage(output)).to_pylist(), key=lambda r: (r["id"], r["index"]))


def test_output_equals_single_renders_for_batch_sizes_1_and_4(tmp_path, input_file, local_config):
    outputs = {}
    for batch_size in (1, 4):
        seen = []
        summary = run_job(job(tmp_path, f"out{batch_size}", batch_size=batch_size, config=None),
                          lambda p: seen.append((p.images_done, p.images_failed, p.images_total, p.eta_s,
                                                 p.rows_done, p.rows_total)))
        assert (summary.rendered, summary.failed) == (6, 3)
        # Progress starts at nothing done of the input's 9 images, rises, and reaches its total.
        assert seen[0][:3] == (0, 0, 9) and seen[0][3] is None
        assert seen[-1][:3] == (6, 3, 9) and seen[-1][3] == 0
        assert [d + f for d, f, *_ in seen] == sorted(d + f for d, f, *_ in seen)
        assert seen[0][4:] == (0, seen[0][5]) and seen[-1][4] == seen[-1][5]  # every row finished
        outputs[batch_size] = {(r["id"], r["index"]): r for r in metadata(str(tmp_path / f"out{batch_size}"))}
    assert outputs[1].keys() == outputs[4].keys()
    renderer = Renderer(local_config.spec("flux-schnell").model_copy(update={"warmup": False}), device="cpu")
    for (rid, index), row in outputs[1].items():
        other = outputs[4][(rid, index)]
        assert row["sha256"] == other["sha256"] and row["seed"] == other["seed"]
        if row["error"]:
            continue
        [single] = renderer.render([RenderRequest(model="flux-schnell", prompt=row["prompt"], seed=row["seed"],
                                                  width=row["width"], height=row["height"], steps=2)])
        on_disk = (tmp_path / "out4" / row["path"]).read_bytes()
        assert np.array_equal(pixels(on_disk), pixels(single.image)), (rid, index)


def test_seeds_offset_and_derived_deterministically(tmp_path, input_file):
    run_job(job(tmp_path, "one"))
    run_job(job(tmp_path, "two"))
    one, two = metadata(str(tmp_path / "one")), metadata(str(tmp_path / "two"))
    seeds = {(r["id"], r["index"]): r["seed"] for r in one}
    assert [seeds[("a", i)] for i in range(3)] == [10, 11, 12]
    assert [seeds[("c", i)] for i in range(2)] == [5, 6]
    assert seeds[("b", 0)] is not None and seeds[("b", 0)] == {(r["id"], r["index"]): r["seed"] for r in two}[("b", 0)]
    other_job_seed = run_job(job(tmp_path, "three", seed=99))
    assert other_job_seed.rendered == 6
    assert {(r["id"], r["index"]): r["seed"] for r in metadata(str(tmp_path / "three"))}[("b", 0)] != seeds[("b", 0)]


def test_bad_rows_become_error_rows_and_budget_fails_the_job(tmp_path, input_file):
    run_job(job(tmp_path, "ok", max_errors=3))
    rows = {r["id"]: r for r in metadata(str(tmp_path / "ok")) if r["error_code"]}
    assert rows.keys() == {"d", "e", "f"}
    assert {i: r["error_code"] for i, r in rows.items()} == {
        "d": "empty_prompt", "e": "invalid_parameter", "f": "model_not_found"}
    assert rows["d"]["error"] == "prompt is missing" and rows["e"]["error"].startswith("size 1000*1000 is not allowed")
    assert "dall-e" in rows["f"]["error"]
    with pytest.raises(JobError, match="3 of 9 images failed, over the error budget"):
        run_job(job(tmp_path, "strict", max_errors=0.2))


def test_rerun_on_complete_output_rewrites_nothing(tmp_path, input_file):
    first = run_job(job(tmp_path, "out"))
    out = tmp_path / "out"
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    again = run_job(job(tmp_path, "out"))
    assert (again.rendered, again.failed, again.skipped, again.images) == (0, 0, first.rendered + 3, 9)
    after = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert after == before


@pytest.mark.parametrize("fmt", ["files", "webdataset", "parquet"])
def test_formats_readable_back(tmp_path, input_file, fmt):
    run_job(job(tmp_path, fmt, format=fmt))
    out = tmp_path / fmt
    rows = [r for r in metadata(str(out)) if not r["error"]]
    assert len(rows) == 6 and len({r["key"] for r in rows}) == 6
    for row in rows:
        if fmt == "files":
            data = (out / row["path"]).read_bytes()
        elif fmt == "webdataset":
            shard, member = row["path"].split("#")
            with tarfile.open(out / shard) as tar:
                data = tar.extractfile(member).read()
                sidecar = json.loads(tar.extractfile(member.replace(".png", ".json")).read())
            assert sidecar["seed"] == row["seed"] and sidecar["prompt"] == row["prompt"]
        else:
            table = pq.read_table(out / row["path"]).to_pylist()
            data = next(r["image"]["bytes"] for r in table if r["key"] == row["key"])
        image = pixels(data)
        assert image.shape == (row["height"], row["width"], 3)
        import hashlib

        assert hashlib.sha256(data).hexdigest() == row["sha256"]


def test_missing_input_and_prompt_column(tmp_path):
    with pytest.raises(JobError, match="no Parquet input"):
        run_job(JobSpec(input=str(tmp_path / "none.parquet"), output=str(tmp_path / "o")))
    pq.write_table(pa.table({"text": ["x"]}), tmp_path / "noprompt.parquet")
    with pytest.raises(JobError, match="no 'prompt' column"):
        run_job(JobSpec(input=str(tmp_path / "noprompt.parquet"), output=str(tmp_path / "o")))


def fake_config(tmp_path, source: str = "fake:flux") -> str:
    path = tmp_path / f"config-{abs(hash(source))}.yaml"
    path.write_text(f"models:\n  flux-schnell: {{source: '{source}', warmup: false}}\n")
    return str(path)


def test_ray_reads_the_shards_and_the_metadata(tmp_path, input_file):
    import ray

    run_job(job(tmp_path, "wds", format="webdataset", shard_size=2))
    out = tmp_path / "wds"
    samples = ray.data.read_webdataset(str(out / "shards")).take_all()
    assert len(samples) == 6 and all(s["png"] is not None and s["json"]["seed"] is not None for s in samples)
    metadata = ray.data.read_parquet(str(out / "metadata")).to_pandas()
    assert len(metadata) == 9 and metadata["error_code"].notna().sum() == 3


def test_manifest_describes_the_run_and_another_dataset_is_refused(tmp_path, input_file):
    summary = run_job(job(tmp_path, "out", shard_size=2))
    written = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert written["shard_size"] == 2 and written["inputs"][0]["rows"] == 6
    assert len(written["inputs"][0]["footer_sha256"]) == 64
    assert {"raydiant", "diffusers", "torch", "ray"} <= {k for k, v in written["versions"].items() if v}
    assert written["models"]["flux-schnell"]["source"] == "fake:flux"
    assert [s["name"] for s in written["shards"]] == ["000000", "000001", "000002", "000003", "000004"]
    assert sum(s["images"] for s in written["shards"]) == summary.images == 9 and summary.shards == 5
    with pytest.raises(JobError, match=r"written for another dataset \(shard_size: 2 before, 3 now\)"):
        run_job(job(tmp_path, "out", shard_size=3))


def test_a_broken_model_source_fixed_then_rerun_renders_every_image(tmp_path, input_file):
    broken = run_job(job(tmp_path, "out", config=fake_config(tmp_path, str(tmp_path / "no-weights"))))
    assert (broken.rendered, broken.failed) == (0, 9)
    assert {r["error_code"] for r in metadata(str(tmp_path / "out"))} == {
        "model_load_failed", "empty_prompt", "invalid_parameter", "model_not_found"}
    fixed = run_job(job(tmp_path, "out"))
    assert (fixed.rendered, fixed.failed, fixed.skipped, fixed.images) == (6, 0, 3, 9)  # the bad rows stay final
    assert sum(r["error_code"] is None for r in metadata(str(tmp_path / "out"))) == 6


def test_a_loras_column_renders_each_rows_adapters_and_records_them(tmp_path, local_config):
    import hashlib

    from cluster.doubles.tiny_loras import build_tiny_lora
    from cluster.lora.cache import LoraCache
    from cluster.spec.loras import LoraRef
    from tests import hostile_adapters

    adapter = build_tiny_lora("flux", tmp_path / "loras" / "a", seed=3)
    hostile_adapters.garbage(tmp_path / "loras")  # a row naming it fails alone; its shard commits the others
    config = tmp_path / "loras.yaml"
    config.write_text(f"models:\n  flux-schnell: {{source: 'tiny:flux', warmup: false}}\n"
                      f"loras: {{local_root: '{tmp_path / 'loras'}', cache_dir: '{tmp_path / 'cache'}'}}\n")
    lora_type = pa.list_(pa.struct([("path", pa.string()), ("scale", pa.float64())]))
    styled = [{"path": "./a/pytorch_lora_weights.safetensors", "scale": 0.8}]
    garbage = [{"path": "./garbage.safetensors", "scale": 1.0}]
    pq.write_table(pa.table({"id": ["r1", "r2", "r3", "r4"], "prompt": ["a fox", "a fox", "a cat", "a fox"],
                             "seed": [4, 4, 5, 4], "loras": pa.array([styled, None, styled, garbage], type=lora_type)}),
                   tmp_path / "in.parquet")
    run_job(JobSpec(input=str(tmp_path / "in.parquet"), output=str(tmp_path / "out"), config=str(config),
                    defaults={"width": 256, "height": 256, "steps": 2}, batch_size=4, max_errors=1))
    rows = {r["id"]: r for r in metadata(str(tmp_path / "out"))}
    assert rows["r4"]["error_code"] == "invalid_parameter" and "garbage.safetensors" in rows["r4"]["error"]
    assert all(rows[rid]["error_code"] is None for rid in ("r1", "r2", "r3"))
    applied = [{"path": styled[0]["path"], "sha256": hashlib.sha256(adapter.read_bytes()).hexdigest(), "scale": 0.8}]
    assert json.loads(rows["r1"]["loras"]) == json.loads(rows["r3"]["loras"]) == applied and rows["r2"]["loras"] is None
    spec = local_config.spec("flux-schnell")
    spec = spec.model_copy(update={"warmup": False, "loras": spec.loras.model_copy(
        update={"local_root": str(tmp_path / "loras")})})
    single = Renderer(spec, device="cpu", lora_cache=LoraCache(tmp_path / "cache"))
    for rid, loras in (("r1", (LoraRef(styled[0]["path"], 0.8),)), ("r2", ())):
        [expected] = single.render([RenderRequest(model="flux-schnell", prompt="a fox", seed=4, width=256, height=256,
                                                  steps=2, loras=loras)])
        assert np.array_equal(pixels((tmp_path / "out" / rows[rid]["path"]).read_bytes()), pixels(expected.image))
    assert not np.array_equal(pixels((tmp_path / "out" / rows["r1"]["path"]).read_bytes()),
                              pixels((tmp_path / "out" / rows["r2"]["path"]).read_bytes()))
