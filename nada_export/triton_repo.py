"""The Triton model repository: one folder per model with config.pbtxt and a version folder.

For each generator NAME:
  NAME            z [z_dim] FP32, truncation [1] FP32 -> image [H, W, 3] UINT8   (ensemble)
  NAME_synthesis  ws [n_latent, w_dim] FP32 -> image [H, W, 3] UINT8
and one mapping_<fingerprint> per base: z, truncation -> ws, shared by every generator of that base.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from nada_core.errors import FieldError
from nada_core.fileio import exchange
from nada_export.tensors import TensorSpec

# the python-backend model each version folder gets as model.py (found, not imported: it needs Triton's own module)
PYTHON_MODEL_SOURCE = Path(importlib.util.find_spec("nada_serve.triton_python_model").origin)
BACKENDS = ("python", "native")


def mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB" if n >= 2**20 else f"{n / 1024:.1f} KiB"


@dataclass(frozen=True)
class Runtime:
    """What runs a served file, as the repository writer needs it."""

    native_platform: str | None  # Triton's own backend for it; None: only the python backend runs it
    native_file: str | None  # the file name Triton's own backend looks for
    needs_gpu: bool  # its instances belong on a GPU whatever it was built for
    built_for_device: bool  # built for one device (cpu or cuda), which the python model must be told


RUNTIMES: dict[str, Runtime] = {
    "onnxruntime": Runtime("onnxruntime_onnx", "model.onnx", needs_gpu=False, built_for_device=False),
    "tensorrt": Runtime("tensorrt_plan", "model.plan", needs_gpu=True, built_for_device=False),
    "aoti": Runtime(None, None, needs_gpu=False, built_for_device=True),
}


@dataclass
class ModelSpec:
    """One served model. file: the ONNX or engine file to place in version 1 (None for ensembles)."""

    name: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    max_batch: int
    file: Path | None = None
    runtime: str = "onnxruntime"  # a key of RUNTIMES
    device: str = "cpu"  # what a runtime built for one device was built for: cpu | cuda
    steps: list[dict] = field(default_factory=list)  # ensemble steps
    description: str = ""
    parameters: dict[str, str] = field(
        default_factory=dict
    )  # config parameters (a multi-domain model's names)


@dataclass
class ServeOptions:
    backend: str = "python"  # python | native
    instance_count: int = 1
    instance_kind: str = "auto"  # auto | cpu | gpu
    queue_delay_us: int = 2000
    threads: int = 0


def _instance_kind(spec: ModelSpec, opts: ServeOptions) -> str:
    if opts.instance_kind != "auto":
        return f"KIND_{opts.instance_kind.upper()}"
    runtime = RUNTIMES[spec.runtime]
    on_gpu = (
        runtime.needs_gpu or (runtime.built_for_device and spec.device == "cuda") or opts.backend == "native"
    )
    return "KIND_GPU" if on_gpu else "KIND_CPU"


def model_filename(spec: ModelSpec, opts: ServeOptions) -> str:
    if opts.backend == "native":
        return RUNTIMES[spec.runtime].native_file
    return spec.file.name if spec.file else ""


def config_pbtxt(spec: ModelSpec, opts: ServeOptions) -> str:
    lines = [f'name: "{spec.name}"']
    if spec.steps:
        lines.append('platform: "ensemble"')
    elif opts.backend == "native":
        lines.append(f'platform: "{RUNTIMES[spec.runtime].native_platform}"')
    else:
        lines.append('backend: "python"')
    lines.append(f"max_batch_size: {spec.max_batch}")
    lines.append("input [\n" + ",\n".join(t.pbtxt() for t in spec.inputs) + "\n]")
    lines.append("output [\n" + ",\n".join(t.pbtxt() for t in spec.outputs) + "\n]")
    if spec.steps:
        steps = []
        for s in spec.steps:
            maps = "".join(f' input_map {{ key: "{k}" value: "{v}" }}' for k, v in s["inputs"].items())
            maps += "".join(f' output_map {{ key: "{k}" value: "{v}" }}' for k, v in s["outputs"].items())
            steps.append(f'    {{ model_name: "{s["model"]}" model_version: -1{maps} }}')
        lines.append("ensemble_scheduling {\n  step [\n" + ",\n".join(steps) + "\n  ]\n}")
        lines += _parameter_lines(spec.parameters)
        return "\n".join(lines) + "\n"
    lines.append(f"dynamic_batching {{ max_queue_delay_microseconds: {opts.queue_delay_us} }}")
    lines.append(f"instance_group [ {{ count: {opts.instance_count} kind: {_instance_kind(spec, opts)} }} ]")
    if opts.backend == "python":
        params = {
            "runtime": spec.runtime,
            "model_file": model_filename(spec, opts),
            "check_finite": "1",
            "threads": str(opts.threads),
            **({"device": spec.device} if RUNTIMES[spec.runtime].built_for_device else {}),
        }
        lines += _parameter_lines({**params, **spec.parameters})
    else:
        lines.append(f'default_model_filename: "{model_filename(spec, opts)}"')
        lines += _parameter_lines(spec.parameters)
    return "\n".join(lines) + "\n"


def _parameter_lines(params: dict[str, str]) -> list[str]:
    return [f'parameters {{ key: "{k}" value: {{ string_value: "{v}" }} }}' for k, v in params.items()]


def write_model(spec: ModelSpec, root: Path, opts: ServeOptions) -> None:
    folder = root / spec.name
    version = folder / "1"
    version.mkdir(parents=True, exist_ok=True)
    (folder / "config.pbtxt").write_text(config_pbtxt(spec, opts))
    if spec.file is not None:
        shutil.copy2(spec.file, version / model_filename(spec, opts))
        if opts.backend == "python":
            shutil.copy2(PYTHON_MODEL_SOURCE, version / "model.py")


def readme(models: list[ModelSpec], opts: ServeOptions) -> str:
    rows = []
    for m in models:
        ins = ", ".join(f"`{t.name}` {t.dtype} {list(t.dims)}" for t in m.inputs)
        outs = ", ".join(f"`{t.name}` {t.dtype} {list(t.dims)}" for t in m.outputs)
        largest = (
            f"{mib(sum(t.nbytes(m.max_batch) for t in m.inputs))} / "
            f"{mib(sum(t.nbytes(m.max_batch) for t in m.outputs))}"
        )
        rows.append(f"| `{m.name}` | {ins} | {outs} | {m.max_batch} | {largest} | {m.description} |")
    backend = (
        "python backend (onnxruntime, TensorRT or an AOTInductor package inside; runs on the tritonserver "
        "bundled in nvidia-pytriton)"
        if opts.backend == "python"
        else "Triton's own onnxruntime/tensorrt backends (NGC tritonserver container)"
    )
    return "\n".join(
        [
            "# nada Triton model repository",
            "",
            f"Written by `nada-export`; models use the {backend}. Every model is batched: dims below exclude "
            "the batch axis (max_batch_size in each config.pbtxt). Start it with `nada-serve <this folder>`.",
            "",
            "Images are RGB, UINT8, height x width x 3, ready to encode. Seeds: z = "
            "numpy.random.RandomState(seed).randn(1, z_dim).",
            "",
            "| model | inputs | outputs | max batch | largest request / response | what it is |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
            "Limits a client meets, enforced by the server: these dtypes and shapes only, at most `max batch` "
            "items a request (so a valid request or response is never larger than the sizes shown); NaN or "
            "infinity in any input is refused with `input 'NAME' contains NaN or infinity`. Model loading and "
            "the repository index are restricted to nada-serve itself.",
            "",
            "`manifest.json` lists the same, with where each generator came from.",
            "",
        ]
    )


def write_repository(repo: Path, models: list[ModelSpec], opts: ServeOptions, manifest: dict) -> None:
    """Write every model; models already in `repo` that are not rewritten are kept. The new
    repository is staged beside the old one and exchanged with it in one step (fileio.exchange), so
    a failure or a kill at any moment leaves `repo` whole: the old one, or the new one."""
    repo = Path(repo)
    if repo.exists() and not repo.is_dir():
        raise FieldError(f"{{repository}} '{repo}' is a file; name a directory")
    repo.parent.mkdir(parents=True, exist_ok=True)
    recover_interrupted(repo)
    staging = Path(tempfile.mkdtemp(prefix=f".{repo.name}.staging-{os.getpid()}-", dir=repo.parent))
    try:
        names = {m.name for m in models}
        old_manifest = {}
        if repo.exists():
            for child in repo.iterdir():
                if child.is_dir() and child.name not in names:
                    shutil.copytree(child, staging / child.name)
            if (repo / "manifest.json").exists():
                old_manifest = json.loads((repo / "manifest.json").read_text())
        for m in models:
            write_model(m, staging, opts)
        merged = {**old_manifest.get("models", {}), **manifest["models"]}
        kept = [m for m in old_manifest.get("model_specs", []) if m["name"] not in names]
        specs = kept + [_spec_json(m) for m in models]
        parity = {**old_manifest.get("parity", {}), **manifest.get("parity", {})}
        # what an earlier export wrote and this one does not (its encoder, the kept models' parity) stays
        kept_manifest = {**old_manifest, **manifest, "models": merged, "model_specs": specs, "parity": parity}
        (staging / "manifest.json").write_text(json.dumps(kept_manifest, indent=2) + "\n")
        (staging / "README.md").write_text(readme([_spec_from_json(s) for s in specs], opts))
        if not repo.exists():
            staging.rename(repo)
        elif not exchange(staging, repo):
            _swap_in_two_renames(staging, repo)
        # staging now holds the old repository (or nothing): removed below
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _swap_in_two_renames(staging: Path, repo: Path) -> None:
    """Where the exchange is not to be had (not Linux, some network file systems): the old repository
    aside, the new one in. A kill between the two leaves no `repo` until recover_interrupted puts the
    old one back."""
    old = repo.with_name(f".{repo.name}.old-{staging.name.rsplit('-', 1)[-1]}")
    repo.rename(old)
    staging.rename(repo)
    shutil.rmtree(old, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover_interrupted(repo: Path) -> None:
    """Undo what a killed export left beside `repo`: its staging folder, whether it held the new
    repository (killed before the exchange) or the old one (killed after it), is removed; an old
    repository that the two-rename fallback had moved aside is put back if `repo` is missing."""
    for staging in repo.parent.glob(f".{repo.name}.staging-*"):
        pid = staging.name[len(f".{repo.name}.staging-") :].split("-", 1)[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(staging, ignore_errors=True)
    olds = sorted(repo.parent.glob(f".{repo.name}.old-*"), key=lambda p: p.stat().st_mtime)
    if olds and not repo.exists():
        olds.pop().rename(repo)
    for old in olds:  # the repository exists: these were already replaced
        shutil.rmtree(old, ignore_errors=True)


def _spec_json(m: ModelSpec) -> dict:
    return {
        "name": m.name,
        "max_batch": m.max_batch,
        "description": m.description,
        "inputs": [[t.name, t.dtype, list(t.dims)] for t in m.inputs],
        "outputs": [[t.name, t.dtype, list(t.dims)] for t in m.outputs],
    }


def _spec_from_json(d: dict) -> ModelSpec:
    return ModelSpec(
        d["name"],
        [TensorSpec(n, t, tuple(s)) for n, t, s in d["inputs"]],
        [TensorSpec(n, t, tuple(s)) for n, t, s in d["outputs"]],
        d["max_batch"],
        description=d["description"],
    )
