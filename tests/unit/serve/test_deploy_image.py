"""`raydiant infra image` (serve/deploy_image.py): every manifest runs one build, named so that
it cannot change under the same name."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from serve.deploy_image import INFRA, MutableImage, check, images, stamp

BUILD = "registry.example.com/team/raydiant:0.1.0-3f2a9c1d5e6f"


@pytest.mark.parametrize("reference", [BUILD, "raydiant@sha256:" + "ab" * 32,
                                       "registry.example.com:5000/raydiant:1.2.3rc1-0123abc"])
def test_a_version_with_its_commit_or_a_digest_names_one_build(reference):
    assert check(reference) == reference


@pytest.mark.parametrize("reference", ["REGISTRY/raydiant:0.1.0", "REGISTRY/raydiant:latest", "REGISTRY/raydiant",
                                       "REGISTRY/raydiant:0.1.0-dirty", "REGISTRY/other:0.1.0-3f2a9c1"])
def test_a_tag_that_can_be_pushed_again_is_refused(reference):
    with pytest.raises(MutableImage, match="does not name one build"):
        check(reference)


def test_every_manifest_and_the_launcher_take_the_build_and_rays_own_image_stays(tmp_path):
    infra = tmp_path / "infra"
    shutil.copytree(INFRA, infra)
    before = {p.relative_to(infra): p.read_text() for p in infra.rglob("*.yaml")}
    changed = stamp(BUILD, infra)
    assert images(infra) == {BUILD}
    assert {p.relative_to(infra) for p in changed} == {p for p, text in before.items() if "raydiant:" in text
                                                       and "image:" in text}
    job = yaml.safe_load((infra / "k8s/job/rayjob.yaml").read_text())
    [submitter] = job["spec"]["submitterPodTemplate"]["spec"]["containers"]
    assert submitter["image"].startswith("rayproject/ray:")  # Ray's CPU image, not ours
    assert stamp(BUILD, infra) == []  # stamped once: nothing left to change


def test_the_cli_refuses_a_mutable_tag_and_writes_nothing():
    before = images()
    result = subprocess.run([str(Path(sys.executable).parent / "raydiant"), "infra", "image",
                             "REGISTRY/raydiant:latest"], capture_output=True, text=True)
    assert result.returncode == 2 and "does not name one build" in result.stdout
    assert images() == before
