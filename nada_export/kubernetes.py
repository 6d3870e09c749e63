"""Kubernetes manifests for a repository nada-export wrote: NVIDIA's tritonserver image serving it on
many machines, laid out as Triton's own deployment charts do (a Deployment with the repository from a
volume or object storage and probes on Triton's health endpoints, a Service for gRPC, HTTP and metrics,
a HorizontalPodAutoscaler on the average time requests wait in Triton's queue, and the
prometheus-adapter rule that turns Triton's metrics into that number)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from nada_core.errors import FieldError
from nada_core.fileio import atomic_path

TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:25.01-py3"
PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002}
QUEUE_METRIC = "avg_time_queue_us"
MOUNT = "/models"
OBJECT_STORES = ("s3://", "gs://", "as://")


@dataclass
class KubernetesOptions:
    """name:           prefix of every object (and the app.kubernetes.io/instance label).
    image:          the tritonserver image; the python backend's models need one that also carries
                    nada's runtime (numpy, onnxruntime or torch), so the default asks for the native backend.
    repository:     "pvc" (a PersistentVolumeClaim, mounted read-only at /models) or an object-store
                    URL Triton reads itself (s3://, gs://, as://; credentials from the Secret NAME-object-store).
    gpus:           GPUs per replica (0: CPU replicas).
    replicas, max_replicas: the autoscaler's range.
    queue_target_us: the average queue time per request the autoscaler holds.
    storage:        size of the PersistentVolumeClaim."""

    name: str = "nada"
    image: str = TRITON_IMAGE
    repository: str = "pvc"
    gpus: int = 1
    replicas: int = 1
    max_replicas: int = 4
    queue_target_us: int = 50_000
    storage: str = "10Gi"


def _check(opts: KubernetesOptions, backend: str) -> None:
    if opts.repository != "pvc" and not opts.repository.startswith(OBJECT_STORES):
        raise FieldError(
            f"{{kubernetes_repository}} {opts.repository}: use pvc or an object-store URL "
            f"({', '.join(OBJECT_STORES)}...)"
        )
    if backend == "python" and opts.image == TRITON_IMAGE:
        raise FieldError(
            "{kubernetes}: the python backend's models need numpy and onnxruntime (or torch) inside the "
            "image; export with {triton_backend} native (Triton's own onnxruntime/tensorrt backends), or name "
            "an image that carries them with {kubernetes_image}"
        )
    if opts.gpus < 0 or not 1 <= opts.replicas <= opts.max_replicas:
        raise FieldError(
            f"{{kubernetes}}: need gpus >= 0 and 1 <= replicas <= max replicas (got {opts.gpus}, "
            f"{opts.replicas}, {opts.max_replicas})"
        )


def manifests(opts: KubernetesOptions, backend: str = "native") -> dict[str, list[dict]]:
    """File name -> the Kubernetes objects it holds."""
    _check(opts, backend)
    app = f"{opts.name}-triton"
    labels = {"app.kubernetes.io/name": "nada-triton", "app.kubernetes.io/instance": opts.name}
    store = MOUNT if opts.repository == "pvc" else opts.repository
    args = [
        f"--model-repository={store}",
        "--model-control-mode=poll",
        "--repository-poll-secs=30",
        "--strict-readiness=true",
        "--exit-on-error=false",
        "--log-verbose=0",
    ]
    probe = lambda path, period, failures: {  # noqa: E731
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "failureThreshold": failures,
    }
    resources = {"requests": {"cpu": "2", "memory": "8Gi"}, "limits": {"memory": "16Gi"}}
    if opts.gpus:
        resources["limits"]["nvidia.com/gpu"] = opts.gpus
    container = {
        "name": "tritonserver",
        "image": opts.image,
        "command": ["tritonserver"],
        "args": args,
        "ports": [{"name": n, "containerPort": p, "protocol": "TCP"} for n, p in PORTS.items()],
        "startupProbe": probe("/v2/health/live", 5, 120),  # loading large models: up to 10 minutes
        "livenessProbe": probe("/v2/health/live", 10, 3),
        "readinessProbe": probe("/v2/health/ready", 5, 2),
        "resources": resources,
        "volumeMounts": [{"name": "shm", "mountPath": "/dev/shm"}],
        "securityContext": {"allowPrivilegeEscalation": False},
    }
    volumes = [
        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}}
    ]  # python backend, shared memory
    if opts.repository == "pvc":
        container["volumeMounts"].append({"name": "models", "mountPath": MOUNT, "readOnly": True})
        volumes.append(
            {
                "name": "models",
                "persistentVolumeClaim": {"claimName": f"{opts.name}-models", "readOnly": True},
            }
        )
    else:
        container["envFrom"] = [{"secretRef": {"name": f"{opts.name}-object-store", "optional": True}}]
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": app, "labels": labels},
        "spec": {
            "replicas": opts.replicas,
            "selector": {"matchLabels": labels},
            # one new replica up and ready before an old one goes: no gap while a new domain rolls out
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(PORTS["metrics"]),
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": {"containers": [container], "volumes": volumes, "terminationGracePeriodSeconds": 60},
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": app, "labels": labels},
        "spec": {
            "type": "ClusterIP",
            "selector": labels,
            "ports": [{"name": n, "port": p, "targetPort": n, "protocol": "TCP"} for n, p in PORTS.items()],
        },
    }
    # gRPC keeps one HTTP/2 connection: behind a ClusterIP all its requests reach one pod. The headless
    # Service lists every ready pod for clients (or a proxy) that balance per request.
    headless = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": f"{app}-headless", "labels": labels},
        "spec": {
            "clusterIP": "None",
            "selector": labels,
            "ports": [{"name": "grpc", "port": PORTS["grpc"], "targetPort": "grpc", "protocol": "TCP"}],
        },
    }
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": app, "labels": labels},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": app},
            "minReplicas": opts.replicas,
            "maxReplicas": opts.max_replicas,
            "metrics": [
                {
                    "type": "Pods",
                    "pods": {
                        "metric": {"name": QUEUE_METRIC},
                        "target": {"type": "AverageValue", "averageValue": str(opts.queue_target_us)},
                    },
                }
            ],
        },
    }
    rule = {
        "rules": [
            {
                "seriesQuery": 'nv_inference_queue_duration_us{namespace!="",pod!=""}',
                "resources": {
                    "overrides": {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}
                },
                "name": {"matches": "nv_inference_queue_duration_us", "as": QUEUE_METRIC},
                # microseconds waited in the queue per request over the last 30 s
                "metricsQuery": "avg(delta(nv_inference_queue_duration_us{<<.LabelMatchers>>}[30s]) / (1 + "
                "delta(nv_inference_request_success{<<.LabelMatchers>>}[30s]))) by (<<.GroupBy>>)",
            }
        ]
    }
    adapter = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"{opts.name}-prometheus-adapter-rules", "labels": labels},
        "data": {"config.yaml": json.dumps(rule, indent=2)},
    }
    files = {
        "deployment.yaml": [deployment],
        "service.yaml": [service, headless],
        "hpa.yaml": [hpa],
        "prometheus-adapter-rules.yaml": [adapter],
    }
    if opts.repository == "pvc":
        files["pvc.yaml"] = [
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": f"{opts.name}-models", "labels": labels},
                "spec": {
                    "accessModes": ["ReadOnlyMany"],
                    "resources": {"requests": {"storage": opts.storage}},
                },
            }
        ]
    return files


def write_manifests(directory: Path, repository: Path, opts: KubernetesOptions) -> list[Path]:
    """Write the manifests for `repository` (its manifest.json says which backend it needs) into
    `directory`, each file under a temporary name renamed when complete, and a README."""
    import yaml

    backend = json.loads((Path(repository) / "manifest.json").read_text()).get("backend", "python")
    files = manifests(opts, backend)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, objects in files.items():
        with atomic_path(directory / name) as tmp:
            tmp.write_text(yaml.safe_dump_all(objects, sort_keys=False))
        written.append(directory / name)
    with atomic_path(directory / "README.md") as tmp:
        tmp.write_text(readme(opts, Path(repository), sorted(files)))
    return written + [directory / "README.md"]


def readme(opts: KubernetesOptions, repository: Path, names: list[str]) -> str:
    copy = (
        "kubectl apply -f pvc.yaml, then copy the repository into the claim (for example from a pod that "
        f"mounts it: `kubectl cp {repository} <pod>:{MOUNT}`)"
        if opts.repository == "pvc"
        else f"upload the repository to {opts.repository} and put the store's credentials in the Secret "
        f"{opts.name}-object-store"
    )
    return "\n".join(
        [
            f"# Kubernetes manifests for {repository.name}",
            "",
            f"Written by `nada-export --kubernetes`: {', '.join(names)}. Triton image `{opts.image}`, "
            f"{opts.gpus} GPU(s) per replica, {opts.replicas}..{opts.max_replicas} replicas.",
            "",
            f"1. {copy};",
            "2. `kubectl apply -f .` (the README is not a manifest; kubectl reads only .yaml files);",
            f"3. the autoscaler reads `{QUEUE_METRIC}` through prometheus-adapter: load "
            "prometheus-adapter-rules.yaml's rule into its configuration;",
            f"4. clients: gRPC `{opts.name}-triton:{PORTS['grpc']}` (one connection stays on one pod: balance "
            f"per request with `{opts.name}-triton-headless` and a client-side round robin, or an "
            "HTTP/2-aware proxy).",
            "",
            "A new domain: `nada-export` it into the same repository; the replicas load it within 30 s "
            "(--model-control-mode=poll). docs/serving.md (Scaling out) says more.",
            "",
        ]
    )
