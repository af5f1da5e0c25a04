"""Cluster files: launcher YAMLs pass Ray's own validation; KubeRay manifests carry what KubeRay needs
and agree with the code (CLI flags, Serve args, resources)."""

from __future__ import annotations

import copy
import shlex
from pathlib import Path

import pytest
import yaml

CLUSTER = Path(__file__).parent.parent / "cluster"
LAUNCHER = sorted(p for p in CLUSTER.glob("*.yaml") if p.name != "runtime_env.yaml")
KUBERAY = sorted((CLUSTER / "kuberay").glob("*.yaml"))


def test_there_is_a_cloud_and_an_on_premises_launcher_file():
    providers = {yaml.safe_load(p.read_text())["provider"]["type"] for p in LAUNCHER}
    assert {"aws", "local"} <= providers


@pytest.mark.parametrize("path", LAUNCHER, ids=[p.name for p in LAUNCHER])
def test_launcher_yaml_passes_rays_validation(path):
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load(path.read_text())
    validate_config(prepare_config(copy.deepcopy(config)))
    start = " ".join(config["head_start_ray_commands"] + config["worker_start_ray_commands"])
    assert "RAY_AUTH_MODE=token" in start  # authentication stays on
    assert "~/.ray/auth_token" in config["file_mounts"]  # every node gets the token, the YAML never holds it


def manifests():
    return {p.name: list(yaml.safe_load_all(p.read_text())) for p in KUBERAY}


def ray_cluster_spec(doc: dict) -> dict:
    return {"RayCluster": lambda s: s, "RayJob": lambda s: s["rayClusterSpec"],
            "RayService": lambda s: s["rayClusterConfig"]}[doc["kind"]](doc["spec"])


def test_kuberay_manifests_have_a_cluster_a_training_job_and_a_service():
    kinds = {doc["kind"] for docs in manifests().values() for doc in docs}
    assert {"RayCluster", "RayJob", "RayService", "PersistentVolumeClaim"} <= kinds


@pytest.mark.parametrize("name", [p.name for p in KUBERAY if p.name != "storage.yaml"])
def test_kuberay_manifest_has_the_fields_kuberay_requires(name):
    import ray

    for doc in manifests()[name]:
        assert doc["apiVersion"] == "ray.io/v1" and doc["metadata"]["name"]
        spec = ray_cluster_spec(doc)
        assert spec["rayVersion"] == ray.__version__
        pods = [spec["headGroupSpec"]] + spec.get("workerGroupSpecs", [])
        assert "rayStartParams" in spec["headGroupSpec"]
        for group in spec.get("workerGroupSpecs", []):
            assert group["groupName"] and "rayStartParams" in group
            assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        for pod in pods:
            container = pod["template"]["spec"]["containers"][0]
            assert container["image"] and container["resources"]["limits"]["cpu"]
            env = {e["name"]: e for e in container["env"]}
            assert env["RAY_AUTH_MODE"]["value"] == "token" and "secretKeyRef" in env["RAY_AUTH_TOKEN"]["valueFrom"]
            mounts = {m["mountPath"] for m in container["volumeMounts"]}
            assert "/mnt/firstlight" in mounts


def test_rayjob_entrypoint_is_valid_firstlight_commands_matching_its_gpus():
    from firstlight.cli import parse_command

    job = manifests()["rayjob-train.yaml"][0]
    commands = [shlex.split(c) for c in job["spec"]["entrypoint"].split("&&")]
    assert [c[0] for c in commands] == ["firstlight", "firstlight"]
    parsed = dict(parse_command(c[1:]) for c in commands)
    train = parsed["train"]
    workers = job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    gpus = workers["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]
    assert train.dist.use_gpu == "yes" and train.dist.num_workers == workers["replicas"] * gpus


def test_rayservice_serve_config_is_valid_and_fits_its_workers():
    from ray.serve.schema import ServeDeploySchema

    from serve.config import ServeConfig

    service = manifests()["rayservice.yaml"][0]
    schema = ServeDeploySchema.model_validate(yaml.safe_load(service["spec"]["serveConfigV2"]))
    app = schema.applications[0]
    assert app.import_path == "serve.app:build_app"
    cfg = ServeConfig.from_args(app.args)
    workers = service["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    gpus = workers["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]
    assert cfg.encoder.max_replicas * cfg.encoder.num_gpus <= workers["maxReplicas"] * gpus


def test_job_runtime_env_pins_what_pyproject_pins_and_ray_accepts_it():
    import tomllib
    from ray.runtime_env import RuntimeEnv

    env = yaml.safe_load((CLUSTER / "runtime_env.yaml").read_text())
    deps = tomllib.loads((CLUSTER.parent / "pyproject.toml").read_text())["project"]["dependencies"]
    assert env["pip"]["packages"] == deps and all("==" in d for d in deps)  # pinned, and the same pins
    assert env["working_dir"] == "."  # the repository ships with the job
    parsed = RuntimeEnv(**env)  # Ray's own checks of the fields
    assert parsed.pip_config()["packages"] == deps

