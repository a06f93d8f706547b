"""The deployable configs are accepted by what deploys them: Ray's Serve config schema
(`serve deploy`, KubeRay serveConfigV2) and the KubeRay RayService CRD."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from cluster.config import CONFIG_DIR, load_config
from serve.deployment import deployment_name

REPO = Path(__file__).resolve().parents[2]
CRDS = REPO.parent / "shared" / "kuberay-crds"


def test_serve_config_file_validates_against_ray_schema():
    schema = ServeDeploySchema.model_validate(yaml.safe_load((CONFIG_DIR / "serve-cluster.yaml").read_text()))
    [app] = schema.applications
    assert app.import_path == "serve.app:build_app"
    served = {deployment_name(m) for m in load_config(CONFIG_DIR / app.args["config"].split("/")[-1]).served_models()}
    assert {d.name for d in app.deployments} <= served | {"ingress"}  # names match what build_app creates


def test_rayservice_manifest_validates_against_kuberay_crd():
    if not CRDS.is_dir():
        pytest.skip(f"KubeRay CRDs not found at {CRDS}")
    crd = yaml.safe_load((CRDS / "ray.io_rayservices.yaml").read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    manifest = yaml.safe_load((REPO / "infra" / "kuberay" / "rayservice.yaml").read_text())
    jsonschema.validate(manifest, version["schema"]["openAPIV3Schema"])
    ServeDeploySchema.model_validate(yaml.safe_load(manifest["spec"]["serveConfigV2"]))


def test_cluster_config_loads():
    config = load_config(CONFIG_DIR / "cluster.yaml")
    assert config.tasks.backend == "redis" and config.storage.root.startswith("s3://")
    assert config.serve.deployment("flux-schnell").ray_actor_options["num_gpus"] == 1
