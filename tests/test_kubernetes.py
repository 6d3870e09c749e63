"""nada-export --kubernetes: manifests valid against the Kubernetes schemas (kubernetes-validate,
strict), wired to each other, and refused in one line before any export where they could not work."""

import kubernetes_validate
import pytest
import yaml

from nada_export.kubernetes import KubernetesOptions, manifests
from tests.test_cli import run

EXPORT = ("nada_export.cli.export", "nada-export")
VERSIONS = ("1.30", "1.37")


def validate_all(objects):
    for version in VERSIONS:
        for obj in objects:
            kubernetes_validate.validate(obj, version, strict=True)


def test_export_writes_manifests_that_validate_and_fit_together(tmp_path, rosinality_ckpt):
    out = tmp_path / "k8s"
    r = run(
        [
            *EXPORT,
            str(rosinality_ckpt),
            "--name",
            "base",
            "--triton-backend",
            "native",
            "--max-batch",
            "2",
            "--repository",
            str(tmp_path / "repo"),
            "--kubernetes",
            str(out),
            "--kubernetes-gpus",
            "2",
            "--quiet",
        ]
    )
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md",
        "deployment.yaml",
        "hpa.yaml",
        "prometheus-adapter-rules.yaml",
        "pvc.yaml",
        "service.yaml",
    ]
    docs = {p.name: list(yaml.safe_load_all(p.read_text())) for p in out.glob("*.yaml")}
    validate_all([d for objs in docs.values() for d in objs])
    (deployment,), (service, headless), (hpa,), (pvc,) = (
        docs[f] for f in ("deployment.yaml", "service.yaml", "hpa.yaml", "pvc.yaml")
    )
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert (
        deployment["spec"]["selector"]["matchLabels"]
        == labels
        == service["spec"]["selector"]
        == headless["spec"]["selector"]
    )
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert "--model-repository=/models" in container["args"] and container["image"].startswith(
        "nvcr.io/nvidia/tritonserver:"
    )
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 2
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8000, "grpc": 8001, "metrics": 8002}
    assert {p["targetPort"] for p in service["spec"]["ports"]} == set(ports) and headless["spec"][
        "clusterIP"
    ] == "None"
    claim = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "models")
    assert claim["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == "avg_time_queue_us"
    assert "avg_time_queue_us" in docs["prometheus-adapter-rules.yaml"][0]["data"]["config.yaml"]
    assert "wrote Kubernetes manifests" in r.stdout


def test_object_storage_and_cpu_replicas():
    files = manifests(KubernetesOptions(repository="s3://bucket/models", gpus=0, replicas=2, max_replicas=8))
    validate_all([d for objs in files.values() for d in objs])
    assert "pvc.yaml" not in files
    (deployment,) = files["deployment.yaml"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert (
        "--model-repository=s3://bucket/models" in container["args"]
        and "nvidia.com/gpu" not in container["resources"]["limits"]
    )
    assert container["envFrom"][0]["secretRef"]["name"] == "nada-object-store"
    assert (
        files["hpa.yaml"][0]["spec"]["minReplicas"] == 2 and files["hpa.yaml"][0]["spec"]["maxReplicas"] == 8
    )


@pytest.mark.parametrize("plant", ["a misspelt field", "a port that is not a number"])
def test_the_validator_catches_a_broken_manifest(plant):
    (deployment,) = manifests(KubernetesOptions())["deployment.yaml"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    if plant == "a misspelt field":
        container["readinesProbe"] = container.pop("readinessProbe")
    else:
        container["ports"][0]["containerPort"] = "eight thousand"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, VERSIONS[0], strict=True)


@pytest.mark.parametrize(
    "args,needle",
    [
        ([], "the python backend's models need numpy and onnxruntime"),
        (
            ["--triton-backend", "native", "--kubernetes-repository", "ftp://x"],
            "--kubernetes-repository ftp://x: use pvc or an object-store URL",
        ),
        (["--triton-backend", "native", "--kubernetes-replicas", "5"], "1 <= replicas <= max replicas"),
    ],
)
def test_unworkable_options_are_refused_before_the_export(
    tmp_path, rosinality_ckpt, args, needle, monkeypatch, capsys
):
    from tests.test_cli import in_process

    code, lines = in_process(
        monkeypatch,
        capsys,
        "nada-export",
        str(rosinality_ckpt),
        "--repository",
        str(tmp_path / "repo"),
        "--kubernetes",
        str(tmp_path / "k8s"),
        *args,
    )
    assert (
        code == 2 and len(lines) == 1 and lines[0].startswith("nada-export: error:") and needle in lines[0]
    ), lines
    assert not (tmp_path / "repo").exists() and not (tmp_path / "k8s").exists()
