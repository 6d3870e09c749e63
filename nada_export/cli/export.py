"""nada-export: generators (checkpoints or run directories) -> a verified Triton model repository."""

from __future__ import annotations

import inspect
from pathlib import Path

import typer

from nada_core.cli import run_app, typer_app
from nada_export.engines import ENGINES, PRECISIONS, or_list
from nada_export.kubernetes import KubernetesOptions, manifests, write_manifests
from nada_export.pipeline import export
from nada_export.triton_repo import ServeOptions

# the defaults are the library's: export()'s signature, ServeOptions and KubernetesOptions
EXPORT = {name: p.default for name, p in inspect.signature(export).parameters.items()}
SERVE, K8S = ServeOptions(), KubernetesOptions()

app = typer_app(
    "Export generators to ONNX (TensorRT engines, or AOTInductor packages) and write a Triton model "
    "repository serving all of them.\n\n"
    "Example: nada-export runs/sketch base.pt --engine onnx --triton-backend python --repository "
    "triton_models\n\n"
    "Every exported graph is checked against PyTorch at batch 1, 3 and --max-batch; a model that differs "
    "is refused and the repository is left as it was."
)


@app.command()
def main(
    checkpoints: list[str] = typer.Argument(
        ..., help="Checkpoints (.pt, NVIDIA .pkl, .safetensors) or nada-train run directories."
    ),
    repository: Path = typer.Option(
        Path("triton_models"),
        "--repository",
        "-r",
        help="Triton model repository to write (models already there are kept).",
    ),
    engine: str = typer.Option(
        EXPORT["engine"],
        help=f"{or_list(ENGINES)}. onnx: ONNX graphs; trt: TensorRT engines (needs TensorRT and a GPU); aoti: "
        "AOTInductor packages (.pt2) compiled for --device, wherever PyTorch runs.",
    ),
    name: list[str] = typer.Option(
        [], "--name", help="Served model name per checkpoint, in order (default: file or run folder name)."
    ),
    max_batch: int = typer.Option(
        EXPORT["max_batch"],
        help="Largest batch a model accepts (Triton max_batch_size; TensorRT profile max).",
    ),
    precision: str = typer.Option(
        EXPORT["precision"],
        help=f"{or_list(PRECISIONS)} of the synthesis ("
        + "; ".join(f"{e.name}: {or_list(e.precisions)}" for e in ENGINES.values())
        + "). In fp16 TensorRT keeps modulation/demodulation fp32; the mapping is always fp32. A reduced-"
        "precision synthesis is refused below PSNR 40 dB against fp32.",
    ),
    device: str = typer.Option(
        EXPORT["device"],
        help="aoti: the device the packages are compiled for and served on: cpu, cuda, or auto (cuda when a "
        "GPU is visible).",
    ),
    triton_backend: str = typer.Option(
        SERVE.backend,
        help="python (runs on the tritonserver bundled in nvidia-pytriton) or native (Triton's "
        "onnxruntime/tensorrt backends).",
    ),
    instances: int = typer.Option(
        SERVE.instance_count, help="Model instances per model (instance_group count)."
    ),
    instance_kind: str = typer.Option(
        SERVE.instance_kind, help="auto, cpu or gpu (auto: gpu for native/TensorRT, cpu for python+onnx)."
    ),
    queue_delay_us: int = typer.Option(
        SERVE.queue_delay_us, help="Dynamic batching: how long Triton waits to fill a batch (microseconds)."
    ),
    threads: int = typer.Option(
        SERVE.threads,
        help="intra-op threads (onnxruntime, aoti on the CPU) in python-backend models (0 = all cores).",
    ),
    encoder: str = typer.Option(
        None,
        help="A pSp, e4e or ReStyle checkpoint (or a nada encoder, builtin:world) whose decoder is the base "
        "of every checkpoint exported: adds "
        "its model encoder_<sha> (photo -> W+) and per generator NAME_edit (photo -> image in that domain).",
    ),
    encoder_steps: int = typer.Option(
        None, help="ReStyle encoders: refinement steps built into the served encoder (default 5)."
    ),
    domains: str = typer.Option(
        None,
        help="NAME: serve the lightweight runs among the checkpoints (nada-train --parametrization channels|"
        "styles), and their base where it is given, as one model NAME that draws each item in its own domain "
        "(z, truncation, domain -> image; domains named after their run folders, or --name). Full runs are "
        "exported beside it as their own models.",
    ),
    allow_pickle: bool = typer.Option(
        EXPORT["allow_pickle"],
        "--allow-pickle",
        help="Load checkpoints holding arbitrary Python objects (runs code from the file).",
    ),
    kubernetes: Path = typer.Option(
        None,
        help="Also write Kubernetes manifests for the repository into this folder (NVIDIA's tritonserver "
        "image; needs --triton-backend native unless --kubernetes-image carries nada's runtime).",
    ),
    kubernetes_image: str = typer.Option(K8S.image, help="tritonserver image the manifests run."),
    kubernetes_repository: str = typer.Option(
        K8S.repository,
        help="Where replicas read the repository: pvc (a PersistentVolumeClaim) or s3://, gs://, as:// URL.",
    ),
    kubernetes_gpus: int = typer.Option(K8S.gpus, help="GPUs per replica (0: CPU replicas)."),
    kubernetes_replicas: int = typer.Option(K8S.replicas, help="Fewest replicas the autoscaler keeps."),
    kubernetes_max_replicas: int = typer.Option(
        K8S.max_replicas, help="Most replicas the autoscaler starts."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    serve = ServeOptions(triton_backend, instances, instance_kind, queue_delay_us, threads)
    k8s = KubernetesOptions(
        K8S.name,
        kubernetes_image,
        kubernetes_repository,
        kubernetes_gpus,
        kubernetes_replicas,
        kubernetes_max_replicas,
    )
    if kubernetes is not None:
        manifests(k8s, serve.backend)  # refuse bad options before the export's long work
    report = export(
        checkpoints,
        repository,
        names=name or None,
        engine=engine,
        max_batch=max_batch,
        precision=precision,
        serve=serve,
        allow_pickle=allow_pickle,
        progress=not quiet,
        device=device,
        encoder=encoder,
        encoder_steps=encoder_steps,
        domains=domains,
    )
    for f in report.files:
        print(
            f"  {f.model:32s} {f.path:40s} {f.bytes / 2**20:8.1f} MiB  {f.export_seconds:6.1f} s  "
            f"{f.parity.describe()}"
        )
    print(
        f"wrote {report.repository} ({', '.join(report.models)}) in {report.seconds:.1f} s; serve it with: "
        f"nada-serve {report.repository}"
    )
    if kubernetes is not None:
        files = write_manifests(kubernetes, report.repository, k8s)
        print(f"wrote Kubernetes manifests to {kubernetes}: {', '.join(f.name for f in files)}")


# library fields whose option has another name
FLAGS = {
    "names": "--name",
    "checkpoints": "CHECKPOINTS",
    "backend": "--triton-backend",
    "instance_count": "--instances",
}


def main_entry() -> None:
    run_app(app, "nada-export", FLAGS)
