"""The shard plan (jobs/driver/plan.py): shards of at most `shard_size` images, fixed by input position,
planned from footers and the `n` column only; inputs fingerprinted by their footers."""

from __future__ import annotations

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.driver.plan import InputError, describe_inputs, input_files, plan_shards


def write(path, rows: int, n: list | None = None, row_group_size: int = 1000) -> str:
    columns = {"prompt": [f"p{i}" for i in range(rows)]} | ({"n": n} if n is not None else {})
    pq.write_table(pa.table(columns), path, row_group_size=row_group_size)
    return str(path)


def plan(paths, shard_size, default_n=1, limit=None):
    fs = fsspec.filesystem("file")
    return list(plan_shards(fs, describe_inputs(fs, paths), shard_size, default_n, limit))


def test_shards_are_full_but_the_last_of_each_file(tmp_path):
    first, second = write(tmp_path / "a.parquet", 25, row_group_size=7), write(tmp_path / "b.parquet", 6)
    shards = plan([first, second], shard_size=10)
    assert [(s.name, s.file, s.start, s.stop, s.images) for s in shards] == [
        ("000000", first, 0, 10, 10), ("000001", first, 10, 20, 10), ("000002", first, 20, 25, 5),
        ("000003", second, 0, 6, 6)]
    assert [(s.start, s.stop, s.images) for s in plan([first], shard_size=10, default_n=3)][:2] == [
        (0, 3, 9), (3, 6, 9)]  # three images a row: three rows a shard


def test_an_n_column_is_cut_by_images_and_a_limit_stops_the_plan(tmp_path):
    path = write(tmp_path / "n.parquet", 6, n=[4, 4, 3, None, 12, 1], row_group_size=4)
    assert [(s.start, s.stop, s.images) for s in plan([path], shard_size=8)] == [
        (0, 2, 8), (2, 4, 4), (4, 5, 12), (5, 6, 1)]  # a null n counts as the default; 12 > 8 stands alone
    assert [(s.start, s.stop) for s in plan([path], shard_size=8, limit=3)] == [(0, 2), (2, 3)]


def test_inputs_are_found_and_fingerprinted_by_their_footers(tmp_path):
    write(tmp_path / "in" / "a.parquet" if (tmp_path / "in").mkdir() is None else None, 3)
    write(tmp_path / "in" / "b.parquet", 4)
    fs, files = input_files(str(tmp_path / "in"))
    described = describe_inputs(fs, files)
    assert [(d.rows, len(d.footer_sha256)) for d in described] == [(3, 64), (4, 64)]
    write(tmp_path / "in" / "b.parquet", 4, n=[1, 1, 1, 2])  # same rows, other content
    assert describe_inputs(fs, files)[1].footer_sha256 != described[1].footer_sha256
    (tmp_path / "in" / "c.parquet").write_text("not parquet")
    with pytest.raises(InputError, match="cannot read Parquet .*c.parquet"):
        describe_inputs(*input_files(str(tmp_path / "in")))
    with pytest.raises(InputError, match="no Parquet input"):
        input_files(str(tmp_path / "nothing-*.parquet"))
