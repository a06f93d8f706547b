"""`raydiant models pull`: weights into the cache before a replica needs them, once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

RAYDIANT = str(Path(sys.executable).parent / "raydiant")


def test_pull_fetches_an_fsspec_source_once_and_names_what_it_cannot_pull(tmp_path):
    weights = tmp_path / "weights" / "unet"
    weights.mkdir(parents=True)
    (weights / "model.safetensors").write_bytes(b"w" * 3 * 2**20)
    config = tmp_path / "pull.yaml"
    config.write_text(f"models:\n  flux-schnell: {{source: 'file://{weights.parent}'}}\n"
                      f"  flux-dev: {{source: 'sim:flux'}}\n"
                      f"  flux-merged: {{source: 'file://{tmp_path / 'nowhere'}'}}\n")
    env = os.environ | {"RAYDIANT_CACHE": str(tmp_path / "cache")}

    def pull(*names: str) -> subprocess.CompletedProcess:
        return subprocess.run([RAYDIANT, "models", "pull", *names, "--config", str(config)], capture_output=True,
                              text=True, timeout=120, env=env)

    first = pull("flux-schnell", "flux-dev")
    assert first.returncode == 0, first.stderr
    assert "flux-schnell: fetched 3.0 MiB into" in first.stdout and "flux-dev: nothing to pull" in first.stdout
    again = pull()  # every model: one is there already, one cannot be pulled
    assert again.returncode == 1 and "flux-schnell: in the cache: " in again.stdout  # nothing fetched twice
    assert f"flux-merged: no files at file://{tmp_path / 'nowhere'}" in again.stderr
    unknown = pull("nope")
    assert unknown.returncode == 2 and "unknown model(s): nope" in unknown.stderr
