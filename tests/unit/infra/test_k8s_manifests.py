"""The KubeRay manifests (infra/k8s/) beyond their schemas: what the operator would refuse, what
a pod would wait for forever, and the README's order of applying them.

No Kubernetes runs here, so the operator's own validation is mirrored: each rule below cites the
check of KubeRay's `ray-operator/controllers/ray/utils/validation.go` it reproduces, and each is
shown to fire on a manifest changed to break it, so that it can fail for the reason it names.
Schema validation against the CRDs: tests/unit/serve/test_deploy_config.py.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

from tests.factories import nested_dicts

REPO = Path(__file__).resolve().parents[3]
K8S = REPO / "infra" / "k8s"
RAY_KINDS = {"RayService", "RayJob", "RayCluster"}
MAX_RAY_CLUSTER_NAME = 53  # MaxRayClusterNameLength; RayService and RayJob names: 6 fewer (constant.go)
# What the README names as the user's to create (not defined by any manifest here).
USERS_OWN = {"storage class YOUR-RWX-STORAGE-CLASS"}


def documents(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def manifest_files() -> list[Path]:
    """Every manifest, the overlays' and kustomizations apart: the service's beside this folder's
    kustomization, the batch job's in job/, the interactive cluster's in dev/."""
    return sorted(p for p in [*K8S.glob("*.yaml"), *K8S.glob("*/*.yaml")]
                  if p.name != "kustomization.yaml" and "overlays" not in p.parts)


def all_documents() -> dict[str, list[dict]]:
    """Each manifest's documents, by its path under infra/k8s (as the README applies it)."""
    return {path.relative_to(K8S).as_posix(): documents(path) for path in manifest_files()}


def ray_cluster_spec(manifest: dict) -> dict:
    spec = manifest["spec"]
    return {"RayService": lambda: spec["rayClusterConfig"], "RayJob": lambda: spec["rayClusterSpec"],
            "RayCluster": lambda: spec}[manifest["kind"]]()


def groups(cluster: dict) -> list[dict]:
    return [cluster["headGroupSpec"], *cluster.get("workerGroupSpecs", [])]


def pod_specs(manifest: dict) -> list[dict]:
    if manifest["kind"] in RAY_KINDS:
        specs = [g["template"]["spec"] for g in groups(ray_cluster_spec(manifest))]
        if manifest["kind"] == "RayJob" and "submitterPodTemplate" in manifest["spec"]:
            specs.append(manifest["spec"]["submitterPodTemplate"]["spec"])
        return specs
    if manifest["kind"] in ("StatefulSet", "Deployment", "Job"):
        return [manifest["spec"]["template"]["spec"]]
    return []


def env_names(container: dict) -> set[str]:
    return {e["name"] for e in container.get("env", [])}


# --- KubeRay's validation, mirrored ------------------------------------------------------------

def kuberay_errors(manifest: dict) -> list[str]:
    """What KubeRay's ValidateRay*Metadata / ValidateRay*Spec would refuse in `manifest`."""
    errors: list[str] = []
    kind, name = manifest["kind"], manifest["metadata"]["name"]
    # ValidateRay{Cluster,Job,Service}Metadata: a DNS-1035 label, and short enough for the
    # cluster name KubeRay derives from it.
    limit = MAX_RAY_CLUSTER_NAME - (0 if kind == "RayCluster" else 6)
    if len(name) > limit or not re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name):
        errors.append(f"{kind} name {name!r} must be a DNS-1035 label of at most {limit} characters")
    cluster = ray_cluster_spec(manifest)
    head = cluster["headGroupSpec"]
    # ValidateRayClusterSpec: "headGroupSpec should have at least one container" (and workers).
    for group in groups(cluster):
        if not group["template"]["spec"].get("containers"):
            errors.append("a group has no container")
    head_env = env_names(head["template"]["spec"]["containers"][0])
    # ValidateRayClusterSpec, with GcsFaultToleranceOptions: "cannot set `REDIS_PASSWORD` env var in
    # head Pod", "cannot set `RAY_REDIS_ADDRESS` env var", "cannot set `redis-password` in rayStartParams".
    if cluster.get("gcsFaultToleranceOptions") is not None:
        errors += [f"{v} env var on the head beside gcsFaultToleranceOptions"
                   for v in ("REDIS_PASSWORD", "RAY_REDIS_ADDRESS") if v in head_env]
        if head.get("rayStartParams", {}).get("redis-password"):
            errors.append("redis-password in rayStartParams beside gcsFaultToleranceOptions")
    elif "RAY_REDIS_ADDRESS" in head_env:  # "... implicitly enables GCS fault tolerance"
        errors.append("RAY_REDIS_ADDRESS without gcsFaultToleranceOptions")
    # "cannot set redis username in rayStartParams or environment variables"
    if head.get("rayStartParams", {}).get("redis-username") or "REDIS_USERNAME" in head_env:
        errors.append("a redis username outside gcsFaultToleranceOptions")
    for group in groups(cluster):
        params = group.get("rayStartParams", {})
        # validateRayGroupResources: "resource fields should not be set in both rayStartParams and Resources"
        if any(params.get(k) for k in ("num-cpus", "num-gpus", "memory", "resources")) and group.get("resources"):
            errors.append(f"group {group.get('groupName', 'head')}: resources in rayStartParams and resources")
        # validateRayGroupLabels: "rayStartParams['labels'] is not supported"
        if "labels" in params:
            errors.append(f"group {group.get('groupName', 'head')}: rayStartParams['labels']")
    # IsAuthEnabled: "authOptions.mode is 'token' but minimum Ray version is 2.52.0"
    if cluster.get("authOptions", {}).get("mode") == "token":
        version = tuple(int(p) for p in str(cluster.get("rayVersion", "0")).split(".")[:3])
        if version < (2, 52, 0):
            errors.append("token authentication needs rayVersion 2.52.0 or later")
    spec = manifest["spec"]
    if kind == "RayJob":
        errors += deletion_errors(spec)
        # The CRD: preRunningDeadlineSeconds "minimum: 1" (KubeRay 1.6)
        if spec.get("preRunningDeadlineSeconds", 1) < 1:
            errors.append("preRunningDeadlineSeconds must be at least 1")
        # "activeDeadlineSeconds must be a positive integer", "backoffLimit must be a positive integer"
        if spec.get("activeDeadlineSeconds", 1) <= 0 or spec.get("backoffLimit", 0) < 0:
            errors.append("activeDeadlineSeconds must be > 0 and backoffLimit >= 0")
        # "Currently, SidecarMode doesn't support SubmitterPodTemplate"
        if spec.get("submissionMode") == "SidecarMode" and "submitterPodTemplate" in spec:
            errors.append("SidecarMode with a submitterPodTemplate")
    if kind == "RayService":
        # ValidateRayServiceSpec: upgrade types, and "headService.metadata.name should not be set"
        if spec.get("upgradeStrategy", {}).get("type", "NewCluster") not in (
                "NewCluster", "NewClusterWithIncrementalUpgrade", "None"):
            errors.append("an unknown upgradeStrategy type")
        if head.get("headService", {}).get("metadata", {}).get("name"):
            errors.append("headService.metadata.name is set")
    return errors


DELETION_ORDER = ("DeleteWorkers", "DeleteCluster", "DeleteSelf")  # validateTTLConsistency


def deletion_errors(spec: dict) -> list[str]:
    """validateDeletionConfiguration and validateDeletionRules (KubeRay 1.6, where the
    RayJobDeletionPolicy gate is on by default), and the CRD's rules on deletionStrategy."""
    errors = []
    shutdown = spec.get("shutdownAfterJobFinishes", False)
    if not shutdown and spec.get("ttlSecondsAfterFinished", 0) > 0:
        errors.append("ttlSecondsAfterFinished without shutdownAfterJobFinishes")
    if spec.get("ttlSecondsAfterFinished", 0) < 0:
        errors.append("TTLSecondsAfterFinished must be a non-negative integer")
    strategy = spec.get("deletionStrategy")
    if strategy is None:
        return errors
    legacy = "onSuccess" in strategy or "onFailure" in strategy
    rules = strategy.get("deletionRules") or []
    if rules and shutdown:
        errors.append("shutdownAfterJobFinishes and deletionRules are mutually exclusive")
    if rules and legacy:
        errors.append("legacy onSuccess/onFailure and deletionRules together")
    if legacy and not ("onSuccess" in strategy and "onFailure" in strategy):
        errors.append("legacy deletion policies need both onSuccess and onFailure")
    if not legacy and not rules:
        errors.append("deletionStrategy needs onSuccess and onFailure, or deletionRules")
    autoscaling = spec["rayClusterSpec"].get("enableInTreeAutoscaling", False)
    ttls: dict[tuple, dict[str, int]] = {}
    for i, rule in enumerate(rules):
        condition = rule["condition"]
        if ("jobStatus" in condition) == ("jobDeploymentStatus" in condition):
            errors.append(f"deletionRules[{i}]: exactly one of JobStatus and JobDeploymentStatus")
            continue
        if condition.get("ttlSeconds", 0) < 0:
            errors.append(f"deletionRules[{i}]: TTLSeconds must be non-negative")
            continue
        if spec.get("clusterSelector") and rule["policy"] in ("DeleteCluster", "DeleteWorkers"):
            errors.append(f"deletionRules[{i}]: {rule['policy']} not supported when ClusterSelector is set")
            continue
        if autoscaling and rule["policy"] == "DeleteWorkers":
            errors.append(f"deletionRules[{i}]: DeleteWorkers not supported with autoscaling enabled")
            continue
        key = ("jobStatus", condition["jobStatus"]) if "jobStatus" in condition \
            else ("jobDeploymentStatus", condition["jobDeploymentStatus"])
        if rule["policy"] in ttls.setdefault(key, {}):
            errors.append(f"deletionRules[{i}]: duplicate rule for {rule['policy']} and {key[1]}")
            continue
        ttls[key][rule["policy"]] = condition.get("ttlSeconds", 0)
    for key, by_policy in ttls.items():
        ordered = [by_policy[p] for p in DELETION_ORDER if p in by_policy]
        if ordered != sorted(ordered):
            errors.append(f"for {key[1]}: TTLs must not decrease from DeleteWorkers to DeleteCluster to DeleteSelf")
    return errors


def ray_manifests() -> list[tuple[str, dict]]:
    return [(name, d) for name, docs in all_documents().items() for d in docs if d["kind"] in RAY_KINDS]


@pytest.mark.parametrize(("name", "manifest"), ray_manifests(), ids=lambda v: v if isinstance(v, str) else "")
def test_the_operator_accepts_every_ray_manifest(name, manifest):
    assert kuberay_errors(manifest) == [], name


def broken(kind: str, change) -> dict:
    manifest = copy.deepcopy(next(d for _, d in ray_manifests() if d["kind"] == kind))
    change(manifest)
    return manifest


def head_container(manifest: dict) -> dict:
    return ray_cluster_spec(manifest)["headGroupSpec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize(("kind", "change", "words"), [
    ("RayService", lambda m: head_container(m)["env"].append({"name": "REDIS_PASSWORD", "value": "x"}),
     "REDIS_PASSWORD env var on the head"),
    ("RayService", lambda m: ray_cluster_spec(m)["headGroupSpec"]["rayStartParams"].update({"redis-password": "x"}),
     "redis-password in rayStartParams"),
    ("RayService", lambda m: ray_cluster_spec(m).update({"rayVersion": "2.50.0"}), "rayVersion 2.52.0"),
    ("RayService", lambda m: m["metadata"].update({"name": "r" * 48}), "at most 47"),
    ("RayCluster", lambda m: ray_cluster_spec(m)["headGroupSpec"].update({"resources": {"CPU": "1"}}),
     "resources in rayStartParams and resources"),
    ("RayJob", lambda m: m["spec"].update({"ttlSecondsAfterFinished": 0}), None),  # ttl 0: accepted
    ("RayJob", lambda m: m["spec"].update({"ttlSecondsAfterFinished": 60}),
     "ttlSecondsAfterFinished without shutdownAfterJobFinishes"),
    ("RayJob", lambda m: m["spec"].update({"shutdownAfterJobFinishes": True}), "mutually exclusive"),
    ("RayJob", lambda m: m["spec"]["deletionStrategy"].update({"onSuccess": {"policy": "DeleteCluster"}}),
     "legacy onSuccess/onFailure and deletionRules"),
    ("RayJob", lambda m: m["spec"]["deletionStrategy"]["deletionRules"].append(
        {"policy": "DeleteSelf", "condition": {"jobStatus": "FAILED", "ttlSeconds": 60}}), "must not decrease"),
    ("RayJob", lambda m: m["spec"]["deletionStrategy"]["deletionRules"].append(
        {"policy": "DeleteCluster", "condition": {"jobStatus": "SUCCEEDED"}}), "duplicate rule"),
    ("RayJob", lambda m: m["spec"]["rayClusterSpec"].update({"enableInTreeAutoscaling": True}),
     "DeleteWorkers not supported with autoscaling"),
    ("RayJob", lambda m: m["spec"].update({"preRunningDeadlineSeconds": 0}), "at least 1"),
])
def test_each_mirrored_rule_fires_on_a_manifest_that_breaks_it(kind, change, words):
    errors = kuberay_errors(broken(kind, change))
    if words is None:  # a change the operator accepts (ttl 0 needs no shutdown)
        assert errors == []
    else:
        assert any(words in e for e in errors), errors


# --- what KubeRay injects, and what it needs to reach ------------------------------------------

def test_no_custom_probe_where_kuberay_injects_its_own():
    """KubeRay injects liveness and readiness probes into Ray containers that have none; ours
    replaced them (a worker liveness on `ray health-check` restarts every GPU worker when the
    head restarts for longer than the probe's window)."""
    for name, manifest in ray_manifests():
        for group in groups(ray_cluster_spec(manifest)):
            for container in group["template"]["spec"]["containers"]:
                assert not {"livenessProbe", "readinessProbe"} & set(container), (name, container["name"])


def test_the_operator_can_reach_the_dashboard_of_the_heads_it_drives():
    """KubeRay applies serveConfigV2 and submits RayJobs through the head Service: a dashboard
    bound to 127.0.0.1 is out of its reach."""
    for name, manifest in ray_manifests():
        params = ray_cluster_spec(manifest)["headGroupSpec"].get("rayStartParams", {})
        assert params.get("dashboard-host", "0.0.0.0") == "0.0.0.0", name
        assert params.get("include-dashboard", "true") != "false", name


def test_gpu_pods_tolerate_gpu_taints_want_big_gpus_and_the_head_stays_off_gpu_nodes():
    for name, manifest in ray_manifests():
        cluster = ray_cluster_spec(manifest)
        head = cluster["headGroupSpec"]["template"]["spec"]
        assert "nvidia.com/gpu.present" in str(head["affinity"]), name
        for group in cluster["workerGroupSpecs"]:
            pod = group["template"]["spec"]
            assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
            assert "nvidia.com/gpu.memory" in str(pod["affinity"]), name


def test_every_ray_container_requests_ephemeral_storage_and_gpu_pods_share_one_model_cache():
    for name, manifest in ray_manifests():
        for group in groups(ray_cluster_spec(manifest)):
            pod = group["template"]["spec"]
            for container in pod["containers"]:
                assert "ephemeral-storage" in container["resources"]["requests"], (name, container["name"])
            for volume in pod.get("volumes", []):
                assert "emptyDir" not in volume, (name, volume)  # a per-pod cache downloads again
            if any("nvidia.com/gpu" in c["resources"]["requests"] for c in pod["containers"]):
                assert {"name": "model-cache", "persistentVolumeClaim": {"claimName": "raydiant-model-cache"}} \
                    in pod["volumes"], name


def test_a_finished_rayjob_frees_its_gpus_at_once_keeps_a_failed_head_and_submits_from_a_light_image():
    [(_, job)] = [(n, d) for n, d in ray_manifests() if d["kind"] == "RayJob"]
    spec = job["spec"]
    rules = {(r["policy"], r["condition"].get("jobStatus") or r["condition"]["jobDeploymentStatus"]):
             r["condition"].get("ttlSeconds", 0) for r in spec["deletionStrategy"]["deletionRules"]}
    assert rules[("DeleteCluster", "SUCCEEDED")] == 0  # everything back the moment it succeeds
    for failed in ("FAILED", "Failed"):  # the job failed, or never ran (pre-running deadline, submission)
        assert rules[("DeleteWorkers", failed)] == 0  # the GPUs back at once
        assert rules[("DeleteCluster", failed)] == 3600  # the head (its logs) an hour
    assert not any(policy == "DeleteSelf" for policy, _ in rules)  # the RayJob's status stays
    # A cluster not up in 30 minutes fails the job rather than holding its head for the whole day.
    assert spec["preRunningDeadlineSeconds"] == 1800 < spec["activeDeadlineSeconds"]
    [submitter] = spec["submitterPodTemplate"]["spec"]["containers"]
    ray_version = spec["rayClusterSpec"]["rayVersion"]
    assert submitter["image"] == f"rayproject/ray:{ray_version}-py311"  # CPU image, same Ray
    assert "nvidia.com/gpu" not in str(submitter.get("resources", {}))


def test_no_dead_rayservice_fields():
    [(_, service)] = [(n, d) for n, d in ray_manifests() if d["kind"] == "RayService"]
    assert not {"serviceUnhealthySecondThreshold", "deploymentUnhealthySecondThreshold"} & set(service["spec"])


# --- references: every name a manifest uses exists -----------------------------------------------

DEFINED_KINDS = ("ServiceAccount", "Secret", "Service", "PersistentVolumeClaim", "ConfigMap")


def defined_by(docs: list[dict]) -> dict[str, set]:
    """What `docs` define, by kind (a Secret: its (name, key) pairs)."""
    found: dict[str, set] = {kind: set() for kind in DEFINED_KINDS}
    for doc in docs:
        kind, name = doc["kind"], doc["metadata"]["name"]
        if kind == "Secret":
            found["Secret"] |= {(name, key) for key in {**doc.get("stringData", {}), **doc.get("data", {})}}
        elif kind in found:
            found[kind].add(name)
    return found


def definitions() -> dict[str, set]:
    return defined_by([doc for docs in all_documents().values() for doc in docs])


def references(doc: dict) -> set[tuple[str, object]]:
    """(kind, name) of everything `doc` refers to by name."""
    refs: set[tuple[str, object]] = set()
    for node in nested_dicts(doc):
        if "secretKeyRef" in node:
            refs.add(("Secret", (node["secretKeyRef"]["name"], node["secretKeyRef"]["key"])))
        if "configMapKeyRef" in node or "configMapRef" in node:
            refs.add(("ConfigMap", (node.get("configMapKeyRef") or node["configMapRef"])["name"]))
        if isinstance(node.get("configMap"), dict):  # a volume
            refs.add(("ConfigMap", node["configMap"]["name"]))
        if "serviceAccountName" in node:
            refs.add(("ServiceAccount", node["serviceAccountName"]))
        if "persistentVolumeClaim" in node:
            refs.add(("PersistentVolumeClaim", node["persistentVolumeClaim"]["claimName"]))
        if "redisAddress" in node:
            refs.add(("Service", node["redisAddress"].split(":")[0]))
        if node.get("name") == "RAYDIANT_REDIS_URL":
            refs.add(("Service", re.match(r"redis://(?:[^@]*@)?([^:/]+)", node["value"])[1]))
    return refs


def test_every_name_a_manifest_refers_to_is_defined_by_a_manifest_or_the_users_own():
    defined = definitions()
    missing = [(name, kind, ref) for name, docs in all_documents().items() for doc in docs
               for kind, ref in references(doc) if ref not in defined[kind]]
    assert missing == []
    readme = (REPO / "README.md").read_text()
    for own in USERS_OWN:
        assert own.split()[-1] in readme, f"the README must say that the {own} is the user's to create"
        assert own.split()[-1] in (K8S / "model-cache.yaml").read_text()


def applied_in_readme() -> list[str]:
    return re.findall(r"kubectl apply -f infra/k8s/(\S+\.yaml)", (REPO / "README.md").read_text())


def test_the_readmes_order_applies_every_reference_before_its_use():
    order = applied_in_readme()
    assert set(order) == set(all_documents()), "every manifest is applied in the README"
    docs = all_documents()
    defined: dict[str, set] = {kind: set() for kind in DEFINED_KINDS}
    for name in order:
        own = defined_by(docs[name])
        for doc in docs[name]:
            for kind, ref in references(doc):
                assert ref in defined[kind] | own[kind], f"{name} refers to {kind} {ref} before it is applied"
        for kind in defined:
            defined[kind] |= own[kind]


def test_redis_keeps_its_data_and_needs_its_password():
    [service, redis] = documents(K8S / "redis.yaml")
    assert service["kind"] == "Service" and service["metadata"]["name"] == "redis"
    assert redis["spec"]["volumeClaimTemplates"] and "--requirepass" in redis["spec"]["template"]["spec"][
        "containers"][0]["args"]


# --- scaling from zero: GPU nodes chosen by what the provisioner knows before a node exists -------

OVERLAYS = K8S / "overlays"
# Labels only software on a running node sets (GPU feature discovery, node feature discovery):
# a required term on one leaves a group of zero nodes at zero (kubernetes/autoscaler#8341).
RUNNING_NODE_ONLY = ("nvidia.com/", "feature.node.kubernetes.io/")
# Per cloud, the labels its provisioner sets from a node group's template or an instance type.
PROVISIONER_LABELS = {"gke": {"cloud.google.com/gke-accelerator"},
                      "eks-karpenter": {"karpenter.k8s.aws/instance-gpu-memory"},
                      "aks": {"node.kubernetes.io/instance-type"}}


def required_node_labels(pod: dict) -> set[str]:
    """The label keys a pod cannot be placed without: its nodeSelector and required affinity."""
    required = (pod.get("affinity", {}).get("nodeAffinity", {})
                .get("requiredDuringSchedulingIgnoredDuringExecution", {}).get("nodeSelectorTerms", []))
    return set(pod.get("nodeSelector", {})) | {e["key"] for term in required for e in term.get("matchExpressions", [])}


def running_node_only(manifest: dict) -> list[str]:
    return sorted(label for pod in pod_specs(manifest) for label in required_node_labels(pod)
                  if label.startswith(RUNNING_NODE_ONLY))


def kustomization(folder: Path) -> dict:
    return yaml.safe_load((folder / "kustomization.yaml").read_text())


def apply_patches(docs: list[dict], patches: list[dict]) -> int:
    """Apply JSON "add" patches by target, as kustomize does; how many documents they reached."""
    reached = 0
    for patch in patches:
        targets = [d for d in docs if all(d.get("kind") == v if k == "kind" else d["metadata"].get(k) == v
                                          for k, v in patch["target"].items())]
        reached += len(targets)
        for doc in targets:
            for op in yaml.safe_load(patch["patch"]):
                assert op["op"] == "add"
                *parents, leaf = op["path"].strip("/").split("/")
                node = doc
                for key in parents:  # every step but the last exists already: the patch fits the base
                    node = node[int(key)] if isinstance(node, list) else node[key]
                node[leaf] = op["value"]
    return reached


def kustomize_build(folder: Path) -> list[dict]:
    """What `kubectl apply -k folder` applies, for the part of kustomize these folders use:
    resources, components and JSON "add" patches. Kustomize's load restriction is kept: a file
    resource must be in or below the folder; from elsewhere only a folder with its own
    kustomization may be taken."""
    folder = folder.resolve()
    spec = kustomization(folder)
    docs: list[dict] = []
    for entry in spec.get("resources", []):
        path = (folder / entry).resolve()
        if path.is_dir():
            docs += kustomize_build(path)
        else:
            assert path.is_relative_to(folder), f"{folder}: kustomize refuses {entry}: not in or below the folder"
            docs += documents(path)
    for component in spec.get("components", []):
        part = kustomization(folder / component)
        assert part["kind"] == "Component"
        apply_patches(docs, part["patches"])  # a component's patch may match nothing here
    assert apply_patches(docs, spec.get("patches", [])) >= len(spec.get("patches", [])), folder
    return docs


OVERLAID = {"service": (".", "RayService"), "job": ("job", "RayJob"), "dev": ("dev", "RayCluster")}


def test_every_kustomization_takes_files_only_from_its_own_folder(tmp_path):
    for folder in sorted({p.parent for p in K8S.rglob("kustomization.yaml")}):
        if kustomization(folder)["kind"] == "Kustomization":
            assert kustomize_build(folder), folder
    # `kubectl apply -k infra/k8s` is the service: every manifest the README applies before it.
    assert [d["metadata"]["name"] for d in kustomize_build(K8S)] == [
        d["metadata"]["name"] for name in ("serviceaccount.yaml", "redis.yaml", "model-cache.yaml",
                                           "raydiant-config.yaml", "rayservice.yaml") for d in documents(K8S / name)]
    # The rule fires: an overlay that takes a file from above its folder (kustomize: "security;
    # file ... is not in or below ...", which the first overlays here did).
    (tmp_path / "base.yaml").write_text((K8S / "redis.yaml").read_text())
    (tmp_path / "overlay").mkdir()
    (tmp_path / "overlay" / "kustomization.yaml").write_text("kind: Kustomization\nresources: [../base.yaml]\n")
    with pytest.raises(AssertionError, match="kustomize refuses"):
        kustomize_build(tmp_path / "overlay")


@pytest.mark.parametrize("cloud", sorted(PROVISIONER_LABELS))
@pytest.mark.parametrize("what", sorted(OVERLAID))
def test_each_cloud_requires_gpu_nodes_by_a_label_its_provisioner_knows(cloud, what):
    assert {p.name for p in OVERLAYS.iterdir()} == set(PROVISIONER_LABELS)
    sub, kind = OVERLAID[what]
    [manifest] = [d for d in kustomize_build(OVERLAYS / cloud / sub) if d["kind"] == kind]
    assert running_node_only(manifest) == []
    for group in ray_cluster_spec(manifest)["workerGroupSpecs"]:
        assert required_node_labels(group["template"]["spec"]) == PROVISIONER_LABELS[cloud], cloud
    head = ray_cluster_spec(manifest)["headGroupSpec"]["template"]["spec"]
    assert required_node_labels(head) == set() and "tolerations" not in head  # off GPU nodes by their taint


# --- least privilege: each pod's identity, token and process rights -------------------------------

def every_pod() -> list[tuple[str, str, dict]]:
    """(file, role, pod spec) of every pod template; role: head, worker, submitter or other."""
    pods = []
    for name, docs in all_documents().items():
        for doc in docs:
            if doc.get("kind") in RAY_KINDS:
                cluster = ray_cluster_spec(doc)
                pods.append((name, "head", cluster["headGroupSpec"]["template"]["spec"]))
                pods += [(name, "worker", g["template"]["spec"]) for g in cluster.get("workerGroupSpecs", [])]
                if "submitterPodTemplate" in doc["spec"]:
                    pods.append((name, "submitter", doc["spec"]["submitterPodTemplate"]["spec"]))
            else:
                pods += [(name, "other", pod) for pod in pod_specs(doc)]
    return pods


def test_only_heads_run_as_the_identity_kuberay_gives_the_autoscalers_rights():
    for name, role, pod in every_pod():
        assert (pod["serviceAccountName"] == "raydiant-head") == (role == "head"), (name, role)
        # No Kubernetes API token where no Kubernetes API is called (the head's autoscaler calls it).
        assert pod.get("automountServiceAccountToken", True) is (role == "head"), (name, role)


def test_every_pod_is_restricted_and_owns_the_volumes_it_writes():
    for name, role, pod in every_pod():
        context = pod["securityContext"]
        assert context["runAsNonRoot"] is True and context["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert "fsGroup" in context, (name, role)  # the model cache and Redis' data: written by the pod's user
        for container in pod["containers"]:
            assert container["securityContext"] == {"allowPrivilegeEscalation": False,
                                                    "capabilities": {"drop": ["ALL"]}}, (name, container["name"])
        for init in pod.get("initContainers", []):  # the one root step: the cache's owner, on NFS classes
            assert init["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN"]}, name
            assert init["securityContext"]["allowPrivilegeEscalation"] is False


def test_the_task_store_refuses_when_full_never_evicts():
    [_, redis] = documents(K8S / "redis.yaml")
    args = redis["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--maxmemory-policy") + 1] == "noeviction"
    assert args[args.index("--maxmemory") + 1] == "2gb"  # half the 4 GiB limit: a rewrite's fork counts too
