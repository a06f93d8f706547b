"""The deployment files are accepted by what deploys them, and agree with each other:
Ray's Serve config schema (`serve deploy`, KubeRay serveConfigV2), the KubeRay CRDs (validated
strictly: unknown fields are errors, as `kubectl apply --validate=strict` makes them), Ray's own
cluster-launcher validation, and one set of versions (Ray, Python, raydiant) everywhere."""

from __future__ import annotations

import copy
import os
import re
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from cluster.spec.catalogue import deployment_name
from cluster.spec.config import CONFIG_DIR, load_config
from serve.deploy_config import rendered
from tests.factories import nested_dicts

REPO = Path(__file__).resolve().parents[3]
CRDS = REPO.parent / "shared" / "kuberay-crds"
MANIFESTS = {"RayService": REPO / "infra/k8s/rayservice.yaml", "RayJob": REPO / "infra/k8s/job/rayjob.yaml",
             "RayCluster": REPO / "infra/k8s/dev/raycluster.yaml"}
CRD_FILES = {"RayService": "ray.io_rayservices.yaml", "RayJob": "ray.io_rayjobs.yaml",
             "RayCluster": "ray.io_rayclusters.yaml"}
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def strict(schema):
    """The schema with unknown fields refused wherever the CRD lists the fields (Kubernetes
    prunes or, under --validate=strict, refuses what a structural schema does not name)."""
    schema = copy.deepcopy(schema)

    for node in nested_dicts(schema):
        if (node.get("type") == "object" and "properties" in node and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")):
            node["additionalProperties"] = False
    return schema


def crd_schema(kind: str):
    if not CRDS.is_dir():
        message = f"KubeRay CRDs not found at {CRDS}: the manifests cannot be validated"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    crd = yaml.safe_load((CRDS / CRD_FILES[kind]).read_text())
    return strict(next(v for v in crd["spec"]["versions"] if v["name"] == "v1")["schema"]["openAPIV3Schema"])


@pytest.mark.parametrize("kind", list(MANIFESTS))
def test_manifest_validates_strictly_against_the_kuberay_crd(kind):
    manifest = yaml.safe_load(MANIFESTS[kind].read_text())
    assert manifest["kind"] == kind and manifest["apiVersion"] == "ray.io/v1"
    jsonschema.validate(manifest, crd_schema(kind))


def test_strict_validation_refuses_an_unknown_field():
    manifest = yaml.safe_load(MANIFESTS["RayService"].read_text())
    manifest["spec"]["rayClusterConfig"]["headGroupSpec"]["rayStartParms"] = {}  # a typo
    with pytest.raises(jsonschema.ValidationError, match="rayStartParms"):
        jsonschema.validate(manifest, crd_schema("RayService"))


def test_serve_configs_validate_against_ray_schema_and_name_real_deployments():
    service = yaml.safe_load(MANIFESTS["RayService"].read_text())
    for body in (yaml.safe_load((CONFIG_DIR / "serve-cluster.yaml").read_text()),
                 yaml.safe_load(service["spec"]["serveConfigV2"])):
        [app] = ServeDeploySchema.model_validate(body).applications
        assert app.import_path == "serve.app:build_app"
        served = {deployment_name(m) for m in load_config(CONFIG_DIR / "cluster.yaml").served_models()}
        assert {d.name for d in app.deployments} == served | {"ingress"}  # what build_app creates


def test_generated_files_are_current():
    stale = [str(path.relative_to(REPO)) for path, text in rendered().items() if path.read_text() != text]
    assert not stale, f"stale generated files {stale}: run `raydiant infra render` and commit them"


def test_rayservice_scales_gpus_from_zero_with_the_autoscaler():
    cluster = yaml.safe_load(MANIFESTS["RayService"].read_text())["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True and cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    [gpu] = cluster["workerGroupSpecs"]
    assert gpu["minReplicas"] == 0 and gpu["maxReplicas"] >= 1
    limits = gpu["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "1"
    assert cluster["gcsFaultToleranceOptions"]["redisAddress"]


def test_launcher_config_passes_rays_own_validation():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((REPO / "infra/launcher/aws.yaml").read_text())
    validate_config(prepare_config(config))  # what `ray up` runs before it starts anything
    assert config["available_node_types"]["gpu"]["min_workers"] == 0
    # --gpus on the GPU workers only: docker refuses it on the CPU head.
    assert "--gpus all" not in config["docker"]["run_options"] and "--gpus all" in config["docker"]["worker_run_options"]


def test_versions_agree_across_dockerfile_manifests_and_pyproject():
    dockerfile = (REPO / "infra/docker/Dockerfile").read_text()
    ray_version, py_major, py_minor = re.search(r"^FROM rayproject/ray:(\d+\.\d+\.\d+)-py(\d)(\d+)-\$\{CUDA\}$",
                                                dockerfile, re.M).groups()
    # One CUDA for the base image and torch's wheels (the same build argument names both).
    assert re.search(r"^ARG CUDA=cu\d+$", dockerfile, re.M) and "download.pytorch.org/whl/${CUDA}" in dockerfile
    ray_pin = next(d for d in PYPROJECT["dependencies"] if d.startswith("ray["))
    assert re.search(r"==(\d+\.\d+)\.\*", ray_pin)[1] == ray_version.rsplit(".", 1)[0]
    assert PYPROJECT["requires-python"] == f">={py_major}.{py_minor}"
    assert f"ray=={ray_version}" in (REPO / "infra/docker/constraints.txt").read_text().split()
    image = f"REGISTRY/raydiant:{PYPROJECT['version']}"
    for kind, path in MANIFESTS.items():
        manifest = yaml.safe_load(path.read_text())
        spec = manifest["spec"]
        cluster = spec.get("rayClusterConfig") or spec.get("rayClusterSpec") or spec
        assert cluster["rayVersion"] == ray_version, kind
        groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
        assert {c["image"] for g in groups for c in g["template"]["spec"]["containers"]} == {image}, kind
    assert yaml.safe_load((REPO / "infra/launcher/aws.yaml").read_text())["docker"]["image"] == image


def test_cluster_config_loads():
    config = load_config(CONFIG_DIR / "cluster.yaml")
    assert config.tasks.backend == "redis" and config.storage.root.startswith("s3://")
    assert config.serve.deployment("flux-schnell").ray_actor_options["num_gpus"] == 1


def test_the_image_installs_its_dependencies_in_a_layer_that_code_edits_do_not_rebuild():
    instructions = (REPO / "infra/docker/Dockerfile").read_text().replace("\\\n", " ").splitlines()
    steps = [line for line in instructions if line.startswith(("COPY", "RUN"))]
    install = next(i for i, step in enumerate(steps) if "-r /tmp/requirements.txt" in step)
    first_code = next(i for i, step in enumerate(steps) if re.match(r"COPY .* (cluster|serve|jobs) ", step + " "))
    assert install < first_code, steps
    assert all(step.split()[-2] in ("infra/docker/constraints.txt", "pyproject.toml") for step in steps[:install]
               if step.startswith("COPY")), steps[:install]
    assert "--no-deps" in next(s for s in steps[first_code:] if s.startswith("RUN"))


def test_the_image_takes_torch_from_the_cuda_index_alone_and_checks_its_cuda():
    dockerfile = (REPO / "infra/docker/Dockerfile").read_text()
    steps = dockerfile.replace("\\\n", " ")
    assert "--extra-index-url" not in steps  # PyPI's torch (another CUDA) could win silently
    assert '--index-url "https://download.pytorch.org/whl/${CUDA}" -r /tmp/torch.txt' in steps
    assert "torch.version.cuda == want" in steps and "'+${CUDA}' in torch.__version__" in steps
    assert "['optional-dependencies']['gcs']" in steps and "gcsfs" in str(PYPROJECT["optional-dependencies"]["gcs"])
    # The classic builder makes WORKDIR's folder root's: it is made and owned before.
    made = steps.index("sudo chown ray /home/ray/raydiant")
    assert made < steps.index("WORKDIR /home/ray/raydiant")
    assert re.search(r"driver floor for CUDA 12\.8: R570", dockerfile)


def test_a_changed_config_is_a_new_config_map_and_so_a_new_cluster(tmp_path, monkeypatch):
    """KubeRay starts a new cluster for a changed rayClusterConfig and applies serveConfigV2 in
    place: the config's content names the ConfigMap the pods mount, so a new config changes the
    cluster spec."""
    from serve import deploy_config

    before = rendered()
    source = tmp_path / "cluster.yaml"
    source.write_text(deploy_config.SOURCE.read_text() + "\n# a changed config\n")
    monkeypatch.setattr(deploy_config, "SOURCE", source)
    after = rendered()
    old, new = (yaml.safe_load(r[deploy_config.RAYSERVICE])["spec"]["rayClusterConfig"] for r in (before, after))
    assert old != new
    config_map = yaml.safe_load(after[deploy_config.CONFIG_MAP])
    assert config_map["immutable"] is True and config_map["data"]["cluster.yaml"] == source.read_text()
    mounted = {v["configMap"]["name"] for g in [new["headGroupSpec"], *new["workerGroupSpecs"]]
               for v in g["template"]["spec"]["volumes"] if "configMap" in v}
    assert mounted == {config_map["metadata"]["name"]}
    app = yaml.safe_load(yaml.safe_load(after[deploy_config.RAYSERVICE])["spec"]["serveConfigV2"])["applications"][0]
    assert app["args"]["config"] == f"{deploy_config.MOUNTED}/cluster.yaml"
