"""The `raydiant` command, run as a user runs it (a subprocess of the installed console script)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from diffusers import DiffusionPipeline

from cluster.images.encoding import png_text

RAYDIANT = [shutil.which("raydiant") or str(Path(sys.executable).parent / "raydiant")]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(RAYDIANT + list(args), capture_output=True, text=True, env=os.environ.copy(), timeout=300)


def test_models_list_shows_every_model():
    out = run("models", "list")
    assert out.returncode == 0, out.stderr
    for name in ("flux-schnell", "flux-dev", "flux-merged", "flux-kontext", "stable-diffusion-xl", "stable-diffusion-v1.5"):
        assert name in out.stdout
    assert "tiny:sdxl" in out.stdout


def test_generate_writes_seeded_files(tmp_path):
    out = run("generate", "a red fox", "--n", "2", "--seed", "42", "--size", "512*512", "--steps", "2",
              "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip() == "", out.stderr  # no library's advice (torchao's kernels, torch's notes)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["flux-schnell-42.png", "flux-schnell-43.png"]
    meta = png_text((tmp_path / "flux-schnell-43.png").read_bytes())
    assert (meta["prompt"], meta["seed"], meta["steps"]) == ("a red fox", "43", "2")


def test_bad_input_is_one_line_and_nonzero(tmp_path):
    cases = [
        (["generate", "x", "--model", "dall-e"], "unknown model 'dall-e'"),
        (["generate", "x", "--size", "1000*1000"], "size 1000*1000 is not allowed"),
        (["generate", "x", "--steps", "0"], "steps must be 1..100"),
        (["generate", "x", "--size", "huge"], "--size must look like W*H"),
        (["generate", "x", "--config", str(tmp_path / "none.yaml")], "config file not found"),
    ]
    for args, message in cases:
        out = run(*args)
        assert out.returncode == 2, (args, out.stdout, out.stderr)
        assert message in out.stderr and "Traceback" not in out.stderr
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_unreadable_weights_is_one_line(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(f"models:\n  flux-schnell: {{source: '{tmp_path / 'missing'}'}}\n")
    out = run("generate", "x", "--config", str(config))
    assert out.returncode == 2 and "weights directory" in out.stderr and "Traceback" not in out.stderr


def test_build_tiny_writes_loadable_pipelines(tmp_path):
    out = run("models", "build-tiny", str(tmp_path))
    assert out.returncode == 0, out.stderr
    expected = {"flux": "FluxPipeline", "flux-kontext": "FluxKontextPipeline",
                "sdxl": "StableDiffusionXLPipeline", "sd15": "StableDiffusionPipeline"}
    for directory, pipeline_class in expected.items():
        pipeline = DiffusionPipeline.from_pretrained(tmp_path / directory)
        assert type(pipeline).__name__ == pipeline_class


def test_serve_beyond_loopback_refuses_weak_secrets_before_starting_anything(tmp_path):
    env = os.environ | {"RAYDIANT_API_KEYS": "local-key", "RAYDIANT_SIGNING_KEY": "s" * 10}
    out = subprocess.run(RAYDIANT + ["serve", "--host", "0.0.0.0", "--port", "1"], capture_output=True, text=True,
                         env=env, timeout=120, cwd=tmp_path)
    assert out.returncode == 2 and "refusing to serve on 0.0.0.0" in out.stderr, out.stderr
    assert "API key 1 is shorter than 16 characters" in out.stderr and "signing key is shorter" in out.stderr
    assert "local-key" not in out.stderr and "starting Ray" not in out.stdout + out.stderr
