"""nada-export's work: generators -> verified ONNX (-> TensorRT engines) -> Triton repository."""

from __future__ import annotations

import copy
import dataclasses
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from nada_export.engines import Engine, engine_for
from nada_export.graphs import DomainsSource, EncoderSource, mapping_fingerprint
from nada_export.parity import Parity
from nada_export.tensors import graph_tensors
from nada_export.triton_repo import BACKENDS, ModelSpec, ServeOptions, write_repository
from nada_train.checkpoints import (
    DomainRun,
    LoadedGenerator,
    is_domain_run,
    load_generator,
    load_run_base,
    read_domain_run,
)
from nada_train.domains import Domain

if TYPE_CHECKING:
    from nada_train.encoders.loading import LoadedEncoder
    from nada_train.runs import Run
from nada_core.errors import FieldError, NadaError

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
    encoder: str | Path | LoadedEncoder | None = None,
    encoder_steps: int | None = None,
    domains: str | None = None,
) -> ExportReport:
    """Export generators (checkpoints, run directories, Runs or loaded generators) into a Triton
    model repository: per base one mapping model (z, truncation -> W+), per generator a synthesis
    model (W+ -> image) and an ensemble NAME (z, truncation -> image). Every graph is checked against
    PyTorch at batch 1, 3 and max_batch; one that differs is refused and the repository is left as it
    was. engine: onnx, trt (TensorRT engines; a GPU) or aoti (AOTInductor packages for `device`).
    names: the served model names, in order (default: file or run folder name).
    encoder: a pSp/e4e/ReStyle checkpoint (or one loaded) whose decoder is every generator's base:
    adds its model encoder_<sha> (photo 256x256 -> W+, ReStyle's encoder_steps unrolled, default 5)
    and per generator an ensemble NAME_edit (photo -> image in that domain).
    domains: a model name: the lightweight runs (nada-train --parametrization channels|styles) and
    their base, if given, are served as one model of that name (z, truncation, domain index -> image;
    NAME_synthesis: ws, domain -> image; NAME_edit with an encoder), each domain named by `names` (default
    its run folder's name); full runs among the checkpoints are exported as separate models."""
    serve = serve or ServeOptions()
    checkpoints = [c if isinstance(c, LoadedGenerator) else source_of(c) for c in checkpoints]
    built_by = _validate(checkpoints, engine, names, max_batch, precision, serve, device)
    built_by.available(device)
    if built_by.built_for_device:
        from nada_train.devices import resolve_device  # auto: cuda where a GPU is visible, else cpu

        device = resolve_device(device).type
    t_start = time.perf_counter()
    loaded = [_load(c, allow_pickle, joins_domains=domains is not None) for c in checkpoints]
    names = names or [default_name(g) for g in loaded]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise FieldError(
            f"two generators would both be served as '{sorted(dupes)[0]}'; give each a {{names}}"
        )
    for n in names:
        if not NAME_RE.match(n) or n.startswith(("mapping_", "encoder_")):
            raise FieldError(
                f"{{names}} '{n}': use lowercase letters, digits, _ and - (not starting with mapping_ or "
                "encoder_)"
            )
    inverter = _encoder_source(encoder, encoder_steps, loaded, names)
    shared = _domains_source(domains, loaded, names, serve) if domains is not None else None
    if shared is not None:  # the rest are served each as its own model, as without --domains
        joined = set(shared.names)
        loaded, names = (
            [g for g, n in zip(loaded, names) if n not in joined],
            [n for n in names if n not in joined],
        )

    report = ExportReport(Path(repository), [])
    specs: list[ModelSpec] = []
    manifest_models: dict[str, dict] = {}
    mappings: dict[str, str] = {}
    graphs = 2 * len(loaded) + bool(inverter) + 2 * bool(shared)
    bar = tqdm(total=graphs, disable=not progress, desc="export", unit="graph")
    with tempfile.TemporaryDirectory(prefix="nada-export-") as tmp:
        work = Path(tmp)

        def exported_model(model: str, source, graph: str, description: str) -> ModelSpec:
            """graph built from source into the work folder, checked, and served as `model`."""
            bar.set_postfix_str(model)
            file, exported = _export_one(built_by, source, graph, work / model, max_batch, precision, device)
            report.files.append(exported)
            tensors = graph_tensors(source.config, graph)
            return ModelSpec(
                model,
                *tensors,
                max_batch,
                file=file,
                runtime=built_by.runtime,
                device=device,
                description=description,
            )

        encoder_manifest = {}
        if inverter is not None:
            e = inverter.encoder
            encoder_name = f"encoder_{e.sha256[:12]}"
            words = f"{e.kind} encoder ({_steps_in_words(inverter)}): photo -> W+ codes of its decoder"
            specs.append(exported_model(encoder_name, inverter, "encoder", f"{words}, {Path(e.path).name}"))
            bar.update(1)
            encoder_manifest = {
                "model": encoder_name,
                "source": e.path,
                "kind": e.kind,
                "steps": inverter.steps,
                "sha256": e.sha256,
            }

        def served_record(model: str, c, mapping: str) -> dict:
            """What the manifest says of every served generator model: its shapes, graphs and build."""
            return {
                "size": c.size,
                "z_dim": c.z_dim,
                "n_latent": c.n_latent,
                "mapping": mapping,
                "synthesis": f"{model}_synthesis",
                "engine": engine,
                "precision": precision,
                **({"device": device} if built_by.built_for_device else {}),
                **({"edit": f"{model}_edit"} if inverter is not None else {}),
            }

        def mapping_of(g) -> str:
            """The mapping model of g's base, exported the first time a generator of it comes."""
            fingerprint = mapping_fingerprint(g)
            if fingerprint not in mappings:
                words = "mapping network + truncation (shared by every generator of this base)"
                specs.append(exported_model(f"mapping_{fingerprint}", g, "mapping", words))
                mappings[fingerprint] = f"mapping_{fingerprint}"
            bar.update(1)
            return mappings[fingerprint]

        if shared is not None:
            mapping_name = mapping_of(shared.generator)
            specs += _domains_models(
                shared, domains, mapping_name, exported_model, max_batch, encoder_name if inverter else None
            )
            bar.update(1)
            manifest_models[domains] = {
                "kind": "domains",
                "domains": shared.names,
                "sources": [d.meta.get("source", "") for d in shared.domains],
                "parametrizations": [d.parametrization for d in shared.domains],
                "base_sha256": shared.domains[0].base_sha256,
                **served_record(domains, shared.config, mapping_name),
            }
            report.models.append(domains)
        for name, item in zip(names, loaded):
            g, c = item.generator, item.generator.config

            def served(model: str, graph: str, **how) -> ModelSpec:
                return ModelSpec(model, *graph_tensors(c, graph), max_batch, **how)  # noqa: B023

            mapping_name = mapping_of(g)
            synthesis_name = f"{name}_synthesis"
            inverted = f"{name}: W+ codes -> image (inverted real images, edits)"
            specs.append(exported_model(synthesis_name, g, "synthesis", inverted))
            bar.update(1)
            specs.append(
                served(
                    name,
                    "generator",
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
            if inverter is not None:
                specs.append(
                    served(
                        f"{name}_edit",
                        "edit",
                        steps=[
                            {"model": encoder_name, "inputs": {"photo": "photo"}, "outputs": {"ws": "ws"}},
                            {"model": synthesis_name, "inputs": {"ws": "ws"}, "outputs": {"image": "image"}},
                        ],
                        description=f"{name}: a photo (RGB, resized to 256x256) -> it in this domain "
                        f"({encoder_name} then {synthesis_name})",
                    )
                )
            manifest_models[name] = {
                "source": item.source,
                "kind": item.kind,
                "sha256": item.sha256,
                "base": item.base,
                **served_record(name, c, mapping_name),
            }
            report.models.append(name)
        bar.close()
        manifest = {
            "format": "nada-triton-repo/1",
            "backend": serve.backend,
            "max_batch": max_batch,
            "models": manifest_models,
            **({"encoder": encoder_manifest} if encoder_manifest else {}),
            "parity": {f.model: f.parity.describe() for f in report.files},
        }
        write_repository(Path(repository), specs, serve, manifest)
    report.seconds = time.perf_counter() - t_start
    return report


def on_cpu(g: LoadedGenerator) -> LoadedGenerator:
    """g itself when on the CPU (where graphs are built), else a copy there: the caller's is left as it is."""
    if g.device.type == "cpu":
        return g
    return dataclasses.replace(g, generator=copy.deepcopy(g.generator).cpu())


def _load(
    item: str | LoadedGenerator, allow_pickle: bool, joins_domains: bool
) -> LoadedGenerator | DomainRun:
    """An item of export's list on the CPU. A lightweight run that joins a multi-domain model is read as
    its domain alone: its base is loaded once for every domain (by _domains_source), never once per
    run, and no copy of it is baked per domain (64 domains of a 1024-px base would hold 64 copies)."""
    if isinstance(item, LoadedGenerator):
        return on_cpu(item)
    if joins_domains and is_domain_run(item):
        return read_domain_run(item)
    return load_generator(item, "cpu", allow_pickle)


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


def _domains_source(
    model: str, loaded: list[LoadedGenerator | DomainRun], names: list[str], serve: ServeOptions
) -> DomainsSource:
    """The multi-domain model's parts: the lightweight runs among `loaded` and their base (where it is
    one of them, as domain 'its name' with nothing changed), refused in one line where they do not fit."""
    if not NAME_RE.match(model) or model.startswith(("mapping_", "encoder_")) or model in names:
        raise FieldError(
            f"{{domains}} '{model}': name the model with lowercase letters, digits, _ and - (not starting with "
            "mapping_ or encoder_, and not a checkpoint's name)"
        )
    if serve.backend == "native":
        raise FieldError(
            "{domains}: a multi-domain model refuses a wrong domain per request in nada's python model; drop "
            "{backend} native"
        )
    light = [(n, g) for n, g in zip(names, loaded) if g.domain is not None]
    if not light:
        raise FieldError(
            f"{{domains}} {model}: none of the checkpoints is a lightweight run; train them with nada-train "
            "--parametrization channels or styles"
        )
    base_sha = light[0][1].domain.base_sha256
    for n, g in light:
        if g.domain.base_sha256 != base_sha:
            raise FieldError(
                f"{{domains}} {model}: '{n}' ({g.source}) was trained from another base than "
                f"'{light[0][0]}'; one model serves domains of one base"
            )
    members = [
        (n, g)
        for n, g in zip(names, loaded)
        if g.domain is not None or (g.base is None and g.sha256 == base_sha)  # a run of it, or the base
    ]
    given = [g for _, g in members if g.domain is None]  # the base itself, named among the checkpoints
    base = given[0] if given else load_run_base(light[0][1].source, light[0][1].base, base_sha)
    domains = []
    for _, g in members:
        d = g.domain if g.domain is not None else Domain.zeros(base.generator, "channels", base_sha)
        d.meta = {**d.meta, "source": g.source}
        domains.append(d)
    return DomainsSource(base.generator, domains, [n for n, _ in members])


def _domains_models(
    source: DomainsSource, model: str, mapping: str, exported_model, max_batch: int, encoder: str | None
) -> list[ModelSpec]:
    """The multi-domain synthesis (built and checked) and its ensembles: MODEL (z, truncation, domain)
    and, with an encoder, MODEL_edit (photo, domain). Each carries the domain names, which the client
    reads to take a name and the python model to refuse an index out of range."""
    listed = {"domains": ",".join(source.names)}
    synthesis = f"{model}_synthesis"
    words = f"{model}: W+ codes, domain -> image, domains {', '.join(source.names)} (index 0..{len(source.names) - 1})"
    built = exported_model(synthesis, source, "domains", words)
    built.parameters = listed
    draw = {"model": synthesis, "inputs": {"ws": "ws", "domain": "domain"}, "outputs": {"image": "image"}}
    specs = [
        built,
        ModelSpec(
            model,
            *graph_tensors(source.config, "domains_generator"),
            max_batch,
            steps=[
                {"model": mapping, "inputs": {"z": "z", "truncation": "truncation"}, "outputs": {"ws": "ws"}},
                draw,
            ],
            description=f"{model}: z, truncation, domain -> image ({mapping} then {synthesis})",
            parameters=listed,
        ),
    ]
    if encoder is not None:
        specs.append(
            ModelSpec(
                f"{model}_edit",
                *graph_tensors(source.config, "domains_edit"),
                max_batch,
                steps=[{"model": encoder, "inputs": {"photo": "photo"}, "outputs": {"ws": "ws"}}, draw],
                description=f"{model}: a photo (RGB, resized to 256x256), domain -> it in that domain "
                f"({encoder} then {synthesis})",
                parameters=listed,
            )
        )
    return specs


def _encoder_source(
    encoder, steps: int | None, loaded: list[LoadedGenerator | DomainRun], names: list[str]
) -> EncoderSource | None:
    """The encoder to serve, loaded and checked: it must be the encoder of every generator's base."""
    if encoder is None:
        if steps is not None:
            raise FieldError("{encoder_steps} given without {encoder}; name the encoder checkpoint")
        return None
    from nada_train.encoders.loading import LoadedEncoder, load_encoder

    encoder = encoder if isinstance(encoder, LoadedEncoder) else load_encoder(encoder)
    steps = encoder.default_steps if steps is None else steps
    why = encoder.steps_refusal(steps)
    if why:
        raise FieldError(f"{{encoder_steps}} {steps}: {why}")
    for name, item in zip(names, loaded):
        base = item.base["sha256"] if item.base else item.sha256
        if base != encoder.generator.sha256:
            raise FieldError(
                f"{{encoder}} '{encoder.path}': its decoder is not the base of '{name}' ({item.source}); "
                f"export generators adapted from it (nada-train --generator {encoder.path})"
            )
    return EncoderSource(encoder.to("cpu"), steps)


def _steps_in_words(source: EncoderSource) -> str:
    n = source.steps
    return f"{n} refinement step{'s' * (n != 1)}" if source.encoder.iterative else "one pass"


def _export_one(
    built_by: Engine, g, graph: str, stem: Path, max_batch: int, precision: str, device: str
) -> tuple[Path, ExportedFile]:
    t0 = time.perf_counter()
    path, parity = built_by.build(g, graph, stem, max_batch, precision, device)
    return path, ExportedFile(stem.name, path.name, path.stat().st_size, time.perf_counter() - t0, parity)


def _validate(
    checkpoints, engine, names, max_batch, precision, serve: ServeOptions, device: str = "auto"
) -> Engine:
    """Every option checked before any work; the engine that will build."""
    if not checkpoints:
        raise NadaError("name at least one checkpoint or run directory to export")
    built_by = engine_for(engine, precision, serve.backend)
    if device not in DEVICES:
        raise FieldError(f"{{device}} {device}: choose auto, cpu or cuda")
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
    return built_by
