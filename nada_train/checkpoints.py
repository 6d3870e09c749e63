"""Generator checkpoints in, generator checkpoints out.

Read: rosinality torch files ({"g_ema": state_dict, "latent_avg": w}), NVIDIA's .pkl network
snapshots (nada_train.nvidia_pickle: read as data, their code never run), nada's own safetensors,
run directories written by nada-train, and built-in bases (builtin:NAME). Pickles are never executed
by default: torch files are read with weights_only=True.
Write: safetensors (nada's format; the config travels in the metadata) and rosinality's format.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import pickle
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nada_core.errors import FieldError, NadaError
from nada_core.fileio import atomic_path, sha256_file
from nada_core.seeds import parse_seeds, z_batch
from nada_train.bases import BUILTIN_PREFIX, named_base
from nada_train.devices import resolve_device
from nada_train.domains import RUN_DOMAIN, Domain, bake, load_domain
from nada_train.generator import (
    AnyConfig,
    Generator,
    GeneratorConfig,
    StyleGenerator,
    build_generator,
    config_from_dict,
)
from nada_train.images import to_uint8
from nada_train.nvidia_pickle import load_nvidia_generator
from nada_train.tensor_files import read_safetensors, write_safetensors

RUN_GENERATOR = "generator.safetensors"  # a lightweight run has domains.RUN_DOMAIN instead
RUN_MANIFEST = "manifest.json"
LATENT_AVG_KEY = "latent_avg"


@dataclass
class LoadedGenerator:
    """A generator as a user holds it: where it came from, and images by seed or from W+ codes.

    generator: the StyleGAN2/3 network (torch.nn.Module); images are uint8 [N, H, W, 3] numpy arrays,
    seeds follow NVlabs' generate.py (z = RandomState(seed).randn(1, z_dim)), as nada-generate's PNGs.
    """

    generator: StyleGenerator
    source: str  # what the user named (a path, random:SIZE; a built-in base's checkpoint path)
    kind: str  # "rosinality", "nvidia", "safetensors", "run", "random"
    sha256: str | None  # of the weights file, for the manifest
    base: dict | None = None  # for run directories: the base checkpoint the run started from
    rendering: str = "fp32"  # how it renders: its precision, and the gate's verdict where one ran
    domain: Domain | None = None  # a lightweight run's domain (drawn by `generator`, its base baked)

    @property
    def config(self) -> AnyConfig:
        return self.generator.config

    @property
    def device(self) -> torch.device:
        return next(self.generator.parameters()).device

    def generate(
        self, seeds: int | str | Iterable[int], truncation: float = 1.0, noise: str = "const", batch: int = 8
    ) -> np.ndarray:
        """uint8 images [N, H, W, 3] of these seeds (an int, a list, a range, or text such as "0-3,7").
        noise: const (the checkpoint's stored noise), random or none."""
        from nada_train.generator.inference import render

        return render(self.generator, seed_list(seeds), truncation, noise, batch)

    def ws(self, seeds: int | str | Iterable[int], truncation: float = 1.0) -> torch.Tensor:
        """W+ codes [N, n_latent, w_dim] of these seeds (the mapping, then truncation toward w_avg)."""
        z = torch.from_numpy(z_batch(seed_list(seeds), self.config.z_dim)).to(self.device)
        with torch.no_grad():
            return self.generator.ws(z, truncation)

    def synthesize(self, ws: torch.Tensor, noise: str = "const") -> np.ndarray:
        """uint8 images [N, H, W, 3] from W+ codes [N, n_latent, w_dim] (inverted or edited images)."""
        from nada_train.generator.inference import check_noise

        check_noise(noise)
        want = (self.generator.n_latent, self.config.style_dim)
        if ws.ndim != 3 or tuple(ws.shape[1:]) != want:
            raise FieldError(f"{{ws}} of shape {list(ws.shape)}: give W+ codes [N, {want[0]}, {want[1]}]")
        with torch.no_grad():
            images = self.generator.synthesis(ws.to(self.device, torch.float32), noise_mode=noise)
        return to_uint8(images).cpu().numpy()

    def to(self, device: str | torch.device = "auto", precision: str = "fp32") -> LoadedGenerator:
        """A frozen copy on `device` at `precision`: fp32, fp16 or bf16 (refused when its images drift
        from fp32's: PSNR < 40 dB on seeds 0-15), or auto (fp16 with channels_last on a GPU where it
        passes that gate, else fp32). The copy's `rendering` says which."""
        from nada_train.generator.inference import fastest_copy

        moved = copy.deepcopy(self.generator).to(resolve_device(device))
        fast, how = fastest_copy(moved, precision)
        return dataclasses.replace(self, generator=fast, rendering=how)


def seed_list(seeds: int | str | Iterable[int]) -> list[int]:
    """Seeds as an int, text ("0-3,7") or any iterable of ints -> a list."""
    if isinstance(seeds, str):
        return parse_seeds(seeds)
    if isinstance(seeds, int):
        return [seeds]
    out = [int(s) for s in seeds]
    if not out:
        raise FieldError("{seeds} is empty; give at least one seed, e.g. [0, 1, 2]")
    return out


def random_generator(
    size: int, seed: int = 0, channel_multiplier: int = 2, style_dim: int = 512, n_mlp: int = 8
) -> Generator:
    """A config-f-shaped generator with random weights: for benchmarks and smoke runs only."""
    torch.manual_seed(seed)
    g = Generator(GeneratorConfig.rosinality(size, style_dim, n_mlp, channel_multiplier))
    g.set_w_avg(None)
    return g


def _parse_random_spec(spec: str) -> Generator:
    try:
        size = int(spec.split(":", 1)[1])
        return random_generator(size)
    except (ValueError, IndexError):
        raise NadaError(
            f"generator '{spec}': write random:SIZE with SIZE a power of two >= 8, e.g. random:256"
        ) from None


def load_generator(
    spec: str | Path, device: str | torch.device = "auto", allow_pickle: bool = False
) -> LoadedGenerator:
    """Load a generator: a rosinality .pt, an NVIDIA .pkl (read as data), a nada .safetensors, a
    nada-train run directory, builtin:NAME (a built-in base) or random:SIZE (random weights, for
    smoke tests). device: auto (CUDA where visible), cpu, cuda, cuda:N. allow_pickle: read a torch
    file that holds Python objects beyond tensors, which runs code from it: only for files you trust."""
    spec_s = str(spec)
    device = resolve_device(device)
    if spec_s.startswith(BUILTIN_PREFIX):
        spec_s = str(named_base(spec_s).generator)
    if spec_s.startswith("random:"):
        warnings.warn(f"{spec_s}: generator with RANDOM weights (benchmarks/smoke tests only)", stacklevel=2)
        return LoadedGenerator(_parse_random_spec(spec_s).to(device).eval(), spec_s, "random", None)
    path = Path(spec_s)
    if not path.exists():
        raise NadaError(
            f"generator '{spec_s}': no such file or directory; pass a rosinality .pt checkpoint, an NVIDIA "
            ".pkl, a .safetensors file or a nada-train run directory"
        )
    if path.is_dir():
        loaded = _load_run_dir(path)
    elif path.suffix == ".safetensors":
        loaded = _load_safetensors(path)
    elif path.suffix == ".pkl":
        loaded = LoadedGenerator(load_nvidia_generator(path), str(path), "nvidia", sha256_file(path))
    else:
        loaded = _load_torch_file(path, allow_pickle)
    loaded.generator.to(device).eval()
    return loaded


# torch's weights-only unpickler names a class or function it will not build with these words; its
# other refusals ("Unsupported operand 120") are a damaged or foreign file, which --allow-pickle
# would not mend
OBJECT_WORDS = ("GLOBAL", "allowlisted")


def _unpickler_detail(message: str) -> str:
    """The line of torch's UnpicklingError that says what went wrong: after its "WeightsUnpickler
    error:" (the lines before are the same advice every time), else its first line."""
    head, _, tail = message.partition("WeightsUnpickler error:")
    lines = [line.strip() for line in (tail or head).splitlines() if line.strip()]
    # a blocked module (os.system is posix's) is named further down: "Trying to load unsupported GLOBAL"
    named = [line for line in lines if any(word in line for word in OBJECT_WORDS)]
    return (named or lines or [""])[0]


def read_torch_file(path: Path, allow_pickle: bool = False, what: str = "generator") -> object:
    """A torch file's contents, read with weights_only=True unless allow_pickle; its refusals one line,
    naming `what` and the file."""
    try:
        if allow_pickle:
            return torch.load(path, map_location="cpu", weights_only=False)
        # rosinality's train.py stores its argparse Namespace beside the weights: harmless, allowed.
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = _unpickler_detail(str(exc)) or type(exc).__name__
        if any(word in detail for word in OBJECT_WORDS):
            advice = (
                "Pass {allow_pickle} only if you trust the file"
                if what == "generator"
                else "nada reads it as data only"
            )
            raise FieldError(
                f"{what} '{path}': the file holds Python objects beyond tensors and would run code when "
                f"loaded; refused. {advice}"
            ) from None
        raise NadaError(f"{what} '{path}': not a readable torch checkpoint ({detail[:200]})") from None
    except Exception as exc:  # a corrupt file can fail anywhere in the unpickler: name the exception too
        first = f"{type(exc).__name__}: {_unpickler_detail(str(exc))}".rstrip(": ")
        raise NadaError(f"{what} '{path}': not a readable torch checkpoint ({first[:200]})") from None


def encoder_decoder_state(ckpt: dict) -> tuple[dict, torch.Tensor | None] | None:
    """The decoder (a rosinality generator under decoder.*) and its w_avg in a pSp/e4e/ReStyle
    checkpoint ({'state_dict', 'opts', 'latent_avg'}), or None if the file is not one."""
    state = ckpt.get("state_dict")
    if not isinstance(state, dict) or not any(k.startswith("decoder.") for k in state):
        return None
    decoder = {k[len("decoder.") :]: v for k, v in state.items() if k.startswith("decoder.")}
    latent_avg = ckpt.get(LATENT_AVG_KEY)
    if isinstance(latent_avg, torch.Tensor) and latent_avg.ndim == 2:  # W+ (one row per code): w is a row
        latent_avg = latent_avg[0]
    return decoder, latent_avg


def _load_torch_file(path: Path, allow_pickle: bool) -> LoadedGenerator:
    ckpt = read_torch_file(path, allow_pickle)
    if not isinstance(ckpt, dict):
        raise NadaError(f"generator '{path}': expected a dict with 'g_ema', got {type(ckpt).__name__}")
    if "g_ema" in ckpt:
        state, latent_avg = ckpt["g_ema"], ckpt.get(LATENT_AVG_KEY)
    elif "style.1.weight" in ckpt:
        state, latent_avg = ckpt, ckpt.get(LATENT_AVG_KEY)
    elif (decoder := encoder_decoder_state(ckpt)) is not None:  # an encoder's checkpoint: its decoder
        state, latent_avg = decoder
    else:
        keys = ", ".join(list(ckpt)[:6])
        raise NadaError(
            f"generator '{path}': no 'g_ema' generator in the checkpoint (keys: {keys}); is it a "
            "rosinality-format StyleGAN2 checkpoint?"
        )
    generator = generator_from_state(state, latent_avg, str(path))
    return LoadedGenerator(generator, str(path), "rosinality", sha256_file(path))


def generator_from_state(
    state: dict, latent_avg: torch.Tensor | None, source: str, config: AnyConfig | None = None
) -> StyleGenerator:
    state = {k: v for k, v in state.items() if k != LATENT_AVG_KEY}
    config = config or GeneratorConfig.infer(state, source)
    generator = build_generator(config)
    try:
        generator.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:300]
        raise NadaError(
            f"generator '{source}': tensors do not fit a {config.architecture} generator of size "
            f"{config.size} ({detail})"
        ) from None
    generator.set_w_avg(latent_avg)
    return generator


def _load_safetensors(path: Path) -> LoadedGenerator:
    meta, state = read_safetensors(path, "generator")
    config = config_from_dict(json.loads(meta["nada_config"])) if "nada_config" in meta else None
    generator = generator_from_state(state, state.get(LATENT_AVG_KEY), str(path), config)
    return LoadedGenerator(generator, str(path), "safetensors", sha256_file(path))


def _load_run_dir(path: Path) -> LoadedGenerator:
    weights, manifest_path = path / RUN_GENERATOR, path / RUN_MANIFEST
    if is_domain_run(path):
        return _load_domain_run(path)
    if not weights.exists() or not manifest_path.exists():
        raise NadaError(
            f"run directory '{path}': needs {RUN_GENERATOR} and {RUN_MANIFEST}; is it a finished or saved "
            "nada-train run?"
        )
    loaded = _load_safetensors(weights)
    manifest = json.loads(manifest_path.read_text())
    return LoadedGenerator(loaded.generator, str(path), "run", loaded.sha256, base=manifest.get("base"))


def load_run_base(run: str | Path, record: dict, sha256: str | None = None) -> LoadedGenerator:
    """The base a run was trained from, as its manifest's record names it (on the CPU); refused in one
    line when the file's sha256 is no longer `sha256` (default: the one the record holds)."""
    base = load_generator(record["path"], "cpu")
    want = sha256 or record.get("sha256")
    if want and base.sha256 != want:
        raise NadaError(
            f"run directory '{run}': its base '{base.source}' changed since the run was trained (sha256 "
            "differs); restore the base to draw this domain"
        )
    return base


@dataclass
class DomainRun:
    """A lightweight run as its directory holds it, its base not loaded: all a model that serves many
    domains of one base needs of each (the base is loaded once for them all, no copy baked per domain)."""

    source: str  # the run directory
    sha256: str  # of its domain file
    base: dict  # the manifest's record of the base it was trained from
    domain: Domain
    kind: str = "run"


def is_domain_run(path: str | Path) -> bool:
    path = Path(path)
    return (path / RUN_DOMAIN).is_file() and (path / RUN_MANIFEST).is_file()


def read_domain_run(path: str | Path) -> DomainRun:
    path = Path(path)
    domain, _ = load_domain(path / RUN_DOMAIN)
    manifest = json.loads((path / RUN_MANIFEST).read_text())
    return DomainRun(str(path), sha256_file(path / RUN_DOMAIN), manifest["base"], domain)


def _load_domain_run(path: Path) -> LoadedGenerator:
    """A lightweight run: its base (as the manifest names it, checked by sha256) with the domain baked in."""
    run = read_domain_run(path)
    base = load_run_base(path, run.base, run.domain.base_sha256)
    run.domain.base_sha256 = base.sha256
    return LoadedGenerator(
        bake(base.generator, run.domain), run.source, "run", run.sha256, base=run.base, domain=run.domain
    )


def save_safetensors(
    generator: StyleGenerator, path: str | Path, extra_metadata: dict[str, str] | None = None
) -> None:
    """nada's own format: every tensor plus latent_avg; the config in the metadata."""
    state = {k: v.detach().contiguous().cpu() for k, v in generator.state_dict().items()}
    if generator.w_avg_known:
        state[LATENT_AVG_KEY] = generator.w_avg.detach().cpu().clone()
    meta = {
        "nada_config": json.dumps(generator.config.to_dict()),
        "format": f"nada-{generator.config.architecture}",
    }
    meta.update(extra_metadata or {})
    write_safetensors(state, path, meta)


def save_rosinality(generator: StyleGenerator, path: str | Path) -> None:
    """rosinality's format, readable by its generate.py and by the StyleGAN-NADA reference."""
    c = generator.config
    if c.architecture != "stylegan2":
        raise NadaError(
            f"{path}: rosinality's format holds StyleGAN2 generators only; save this {c.architecture} "
            "generator as .safetensors"
        )
    if not c.rosinality_compatible:
        raise NadaError(
            f"{path}: rosinality's format cannot record lr_mlp={c.lr_mlp}, blur kernel {list(c.blur_kernel)}, "
            f"z width {c.z_dim}, mapping width {c.mlp_features}, conv_clamp {c.conv_clamp} (its loader "
            "assumes 0.01, [1, 3, 3, 1], one width for z and w, no clamp); save as .safetensors instead"
        )
    ckpt = {"g_ema": {k: v.detach().cpu() for k, v in generator.state_dict().items()}}
    if generator.w_avg_known:
        ckpt[LATENT_AVG_KEY] = generator.w_avg.detach().cpu().clone()
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)
