"""nada-export's work: generators -> verified ONNX (-> TensorRT engines) -> Triton repository."""

from __future__ import annotations

import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from nada_export.graphs import mapping_fingerprint
from nada_export.onnx_export import export_verified
from nada_export.parity import Parity, check_parity, parity_batches, parity_limit
from nada_export.triton_repo import BACKENDS, ModelSpec, ServeOptions, TensorSpec, write_repository
from nada_train.checkpoints import LoadedGenerator, load_generator

if TYPE_CHECKING:
    from nada_train.runs import Run
from nada_core.errors import FieldError, NadaError

ENGINES = ("onnx", "trt", "aoti")
PRECISIONS = ("fp32", "fp16", "bf16")
DEVICES = ("auto", "cpu", "cuda")
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_\-]*$")


@dataclass
class ExportedFile:
    model: str
    path: str
    bytes: int
    export_seconds: float
    parity: Parity


@dataclass
class ExportReport:
    repository: Path
    models: list[str]
    files: list[ExportedFile] = field(default_factory=list)
    seconds: float = 0.0


def default_name(loaded: LoadedGenerator) -> str:
    path = Path(loaded.source)
    stem = path.name if loaded.kind == "run" else path.stem
    if loaded.kind == "random":
        stem = loaded.source.replace(":", "")
    name = re.sub(r"[^a-z0-9_\-]+", "_", stem.lower()).strip("_-")
    return name or "generator"


def export(
    checkpoints: list[str | Path | LoadedGenerator | Run],
    repository: str | Path = "triton_models",
    *,
    names: list[str] | None = None,
    engine: str = "onnx",
    max_batch: int = 8,
    precision: str = "fp32",
    serve: ServeOptions | None = None,
    allow_pickle: bool = False,
    progress: bool = True,
    device: str = "auto",
) -> ExportReport:
    """Export generators (checkpoints, run directories, Runs or loaded generators) into a Triton
    model repository: per base one mapping model (z, truncation -> W+), per generator a synthesis
    model (W+ -> image) and an ensemble NAME (z, truncation -> image). Every graph is checked against
    PyTorch at batch 1, 3 and max_batch; one that differs is refused and the repository is left as it
    was. engine: onnx, trt (TensorRT engines; a GPU) or aoti (AOTInductor packages for `device`).
    names: the served model names, in order (default: file or run folder name)."""
    serve = serve or ServeOptions()
    checkpoints = [source_of(c) for c in checkpoints]
    _validate(checkpoints, engine, names, max_batch, precision, serve, device)
    if engine == "aoti":
        from nada_train.devices import resolve_device  # auto: cuda where a GPU is visible, else cpu

        device = resolve_device(device).type
    if engine == "trt":
        from nada_export.tensorrt_engine import import_tensorrt, tensorrt_missing_reason

        import_tensorrt()
        reason = tensorrt_missing_reason()
        if reason:
            raise FieldError(f"{{engine}} trt: {reason}")
    t_start = time.perf_counter()
    loaded = [load_generator(c, "cpu", allow_pickle=allow_pickle) for c in checkpoints]
    names = names or [default_name(g) for g in loaded]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise FieldError(
            f"two generators would both be served as '{sorted(dupes)[0]}'; give each a {{names}}"
        )
    for n in names:
        if not NAME_RE.match(n) or n.startswith("mapping_"):
            raise FieldError(
                f"{{names}} '{n}': use lowercase letters, digits, _ and - (not starting with mapping_)"
            )

    report = ExportReport(Path(repository), [])
    specs: list[ModelSpec] = []
    manifest_models: dict[str, dict] = {}
    mappings: dict[str, str] = {}
    bar = tqdm(total=2 * len(loaded), disable=not progress, desc="export", unit="graph")
    with tempfile.TemporaryDirectory(prefix="nada-export-") as tmp:
        work = Path(tmp)
        for name, item in zip(names, loaded):
            g, c = item.generator, item.generator.config
            ws_spec = TensorSpec("ws", "FP32", (c.n_latent, c.style_dim))
            image_spec = TensorSpec("image", "UINT8", (*c.image_shape, 3))
            fingerprint = mapping_fingerprint(g)
            mapping_name = f"mapping_{fingerprint}"
            if fingerprint not in mappings:
                bar.set_postfix_str(f"{mapping_name}")
                file, exported = _export_one(
                    g,
                    "mapping",
                    work / f"{mapping_name}.onnx",
                    engine,
                    max_batch,
                    precision,
                    mapping_name,
                    device,
                )
                report.files.append(exported)
                specs.append(
                    ModelSpec(
                        mapping_name,
                        [TensorSpec("z", "FP32", (c.z_dim,)), TensorSpec("truncation", "FP32", (1,))],
                        [ws_spec],
                        max_batch,
                        file,
                        _runtime(engine),
                        device=device,
                        description="mapping network + truncation (shared by every generator of this base)",
                    )
                )
                mappings[fingerprint] = mapping_name
            bar.update(1)
            synthesis_name = f"{name}_synthesis"
            bar.set_postfix_str(synthesis_name)
            file, exported = _export_one(
                g,
                "synthesis",
                work / f"{synthesis_name}.onnx",
                engine,
                max_batch,
                precision,
                synthesis_name,
                device,
            )
            report.files.append(exported)
            bar.update(1)
            specs.append(
                ModelSpec(
                    synthesis_name,
                    [ws_spec],
                    [image_spec],
                    max_batch,
                    file,
                    _runtime(engine),
                    device=device,
                    description=f"{name}: W+ codes -> image (inverted real images, edits)",
                )
            )
            specs.append(
                ModelSpec(
                    name,
                    [TensorSpec("z", "FP32", (c.z_dim,)), TensorSpec("truncation", "FP32", (1,))],
                    [image_spec],
                    max_batch,
                    steps=[
                        {
                            "model": mapping_name,
                            "inputs": {"z": "z", "truncation": "truncation"},
                            "outputs": {"ws": "ws"},
                        },
                        {"model": synthesis_name, "inputs": {"ws": "ws"}, "outputs": {"image": "image"}},
                    ],
                    description=f"{name}: z, truncation -> image ({mapping_name} then {synthesis_name})",
                )
            )
            manifest_models[name] = {
                "source": item.source,
                "kind": item.kind,
                "sha256": item.sha256,
                "base": item.base,
                "size": c.size,
                "z_dim": c.z_dim,
                "n_latent": c.n_latent,
                "mapping": mapping_name,
                "synthesis": synthesis_name,
                "engine": engine,
                "precision": precision,
                **({"device": device} if engine == "aoti" else {}),
            }
            report.models.append(name)
        bar.close()
        manifest = {
            "format": "nada-triton-repo/1",
            "backend": serve.backend,
            "max_batch": max_batch,
            "models": manifest_models,
            "parity": {f.model: f.parity.describe() for f in report.files},
        }
        write_repository(Path(repository), specs, serve, manifest)
    report.seconds = time.perf_counter() - t_start
    return report


def source_of(item) -> str:
    """What load_generator reads for an item of export's list: a path as given, a Run's directory,
    a loaded generator's source."""
    if isinstance(item, (str, Path)):
        return str(item)
    if isinstance(item, LoadedGenerator):
        return item.source
    if hasattr(item, "dir") and hasattr(item, "manifest"):  # a nada_train.runs.Run
        return str(item.path)
    raise FieldError(
        f"{{checkpoints}}: cannot export a {type(item).__name__}; give a path, a Run or a loaded generator"
    )


def _runtime(engine: str) -> str:
    return {"trt": "tensorrt", "aoti": "aoti"}.get(engine, "onnxruntime")


def _export_one(
    g,
    kind: str,
    onnx_path: Path,
    engine: str,
    max_batch: int,
    precision: str,
    model: str,
    device: str = "cpu",
) -> tuple[Path, ExportedFile]:
    t0 = time.perf_counter()
    if engine == "aoti":
        path = onnx_path.with_suffix(".pt2")
        parity = _aoti_verified(g, kind, path, max_batch, precision, device)
        return path, ExportedFile(model, path.name, path.stat().st_size, time.perf_counter() - t0, parity)
    parity = export_verified(g, kind, onnx_path, max_batch)
    path = onnx_path
    if engine == "trt":
        from nada_export.tensorrt_engine import EngineRunner, build_engine, engine_filename

        c = g.config
        shapes = {
            "mapping": {"z": (c.z_dim,), "truncation": (1,)},
            "synthesis": {"ws": (c.n_latent, c.style_dim)},
        }[kind]
        engine_precision = precision if kind == "synthesis" else "fp32"
        path = onnx_path.with_name(engine_filename(onnx_path.stem, engine_precision))
        build_engine(onnx_path, path, shapes, max_batch, engine_precision)
        parity = check_parity(g, kind, EngineRunner(path), parity_batches(max_batch), engine_precision)
        if not parity.passed:
            raise NadaError(
                f"TensorRT {kind} engine does not match PyTorch ({parity.describe()}; "
                f"{parity_limit(kind, engine_precision)}); nothing written"
            )
    return path, ExportedFile(model, path.name, path.stat().st_size, time.perf_counter() - t0, parity)


def _aoti_verified(g, kind: str, path: Path, max_batch: int, precision: str, device: str) -> Parity:
    """Build the AOTInductor package, check it like the ONNX graphs; refused (deleted) on failure.
    The mapping stays fp32 (its ws feed every layer); the synthesis is built at `precision`."""
    from nada_export.aoti_engine import AotiRunner, build_package
    from nada_export.graphs import GRAPHS

    graph_precision = precision if kind == "synthesis" else "fp32"
    build_package(g, kind, path, max_batch, device, graph_precision)
    runner = AotiRunner(path, device, GRAPHS[kind][1])
    parity = check_parity(g, kind, runner, parity_batches(max_batch), graph_precision)
    if not parity.passed:
        path.unlink(missing_ok=True)
        raise NadaError(
            f"AOTInductor {kind} package ({device}, {graph_precision}) does not match PyTorch "
            f"({parity.describe()}; {parity_limit(kind, graph_precision)}); nothing written"
        )
    return parity


def _validate(
    checkpoints, engine, names, max_batch, precision, serve: ServeOptions, device: str = "auto"
) -> None:
    if not checkpoints:
        raise NadaError("name at least one checkpoint or run directory to export")
    if engine not in ENGINES:
        raise FieldError(f"{{engine}} {engine}: choose onnx, trt or aoti")
    if precision not in PRECISIONS:
        raise FieldError(f"{{precision}} {precision}: choose fp32, fp16 or bf16")
    if precision != "fp32" and engine == "onnx":
        raise FieldError(
            f"{{precision}} {precision} is built by TensorRT or AOTInductor: use {{engine}} trt or aoti, or "
            f"fp32 with {{engine}} onnx"
        )
    if precision == "bf16" and engine == "trt":
        raise FieldError(
            "{precision} bf16: TensorRT engines are built at fp32 or fp16; bf16 is for {engine} aoti"
        )
    if device not in DEVICES:
        raise FieldError(f"{{device}} {device}: choose auto, cpu or cuda")
    if engine == "aoti" and device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise FieldError(
                "{device} cuda: no CUDA GPU is visible to PyTorch here; build with {device} cpu, or on the "
                "GPU machine"
            )
    if engine == "aoti" and serve.backend == "native":
        raise FieldError(
            "{engine} aoti is served by the python backend (Triton's native backends do not load .pt2 "
            "packages); drop {backend} native"
        )
    if not 1 <= max_batch <= 1024:
        raise FieldError(f"{{max_batch}} {max_batch}: between 1 and 1024")
    if serve.backend not in BACKENDS:
        raise FieldError(f"{{backend}} {serve.backend}: choose native or python")
    if serve.instance_kind not in ("auto", "cpu", "gpu"):
        raise FieldError(f"{{instance_kind}} {serve.instance_kind}: choose auto, cpu or gpu")
    if serve.instance_count < 1:
        raise FieldError(f"{{instance_count}} {serve.instance_count}: at least 1")
    if names and len(names) != len(checkpoints):
        raise FieldError(
            f"{{names}} given {len(names)} times for {len(checkpoints)} checkpoints; give one name per "
            "checkpoint, in order"
        )
