"""An encoder checkpoint as its authors publish it ({'state_dict': encoder.* and decoder.*, 'opts',
'latent_avg'}), read as data, and the call that turns photos into W+ codes of its decoder."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from nada_core.errors import NadaError
from nada_core.fileio import sha256_file
from nada_core.pngs import encoder_photos
from nada_train.bases import BUILTIN_PREFIX
from nada_train.checkpoints import (
    LoadedGenerator,
    encoder_decoder_state,
    generator_from_state,
    load_generator,
    read_torch_file,
)
from nada_train.devices import resolve_device
from nada_train.encoders.backbone import IR50_STAGES
from nada_train.encoders.heads import StyleEncoder
from nada_train.generator import StyleGenerator

INPUT_SIZE = 256  # every encoder of the family reads 256x256 images in [-1, 1]
RESTYLE_STEPS = 5  # ReStyle's default number of refinement steps at inference

# the authors' encoder_type -> (kind, heads on the feature pyramid, progressive codes, iterative)
ENCODER_TYPES = {
    "GradualStyleEncoder": ("psp", True, False),
    "Encoder4Editing": ("e4e", True, True),
    "BackboneEncoder": ("restyle_psp", False, False),
    "ProgressiveBackboneEncoder": ("restyle_e4e", False, True),
}


@dataclass
class LoadedEncoder:
    """encode(images) -> W+ of `generator` (the decoder it was trained with)."""

    network: StyleEncoder
    generator: LoadedGenerator
    kind: str  # psp, e4e, restyle_psp, restyle_e4e
    latent_avg: torch.Tensor  # [n_styles, w_dim]: where codes start (pSp and e4e add it when trained so)
    add_latent_avg: bool
    path: str
    sha256: str | None = None  # of the encoder's file

    @property
    def iterative(self) -> bool:
        return self.kind.startswith("restyle")

    @property
    def default_steps(self) -> int:
        return RESTYLE_STEPS if self.iterative else 1

    @torch.no_grad()
    def encode(self, images: np.ndarray, steps: int | None = None, batch: int = 4) -> np.ndarray:
        """uint8 images [N, H, W, 3] (resized to 256x256 as the authors' transforms do) -> W+ codes
        [N, n_latent, w_dim] float32. steps: ReStyle's refinement steps (default 5); others take 1."""
        x = preprocess(images)
        out = [self.encode_tensor(chunk, steps) for chunk in x.split(batch)]
        return torch.cat(out).cpu().numpy()

    def encode_tensor(self, x: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        """[N, 3, 256, 256] in [-1, 1] -> W+ [N, n_latent, w_dim]."""
        x = x.to(self.latent_avg.device)
        return encoded(
            self.network,
            self.generator.generator,
            self.latent_avg,
            x,
            self.checked_steps(steps),
            self.iterative,
            self.add_latent_avg,
        )

    def checked_steps(self, steps: int | None) -> int:
        """The refinement steps to run: the default for None; refused (steps_refusal) otherwise."""
        steps = self.default_steps if steps is None else steps
        why = self.steps_refusal(steps)
        if why:
            raise NadaError(f"encoder '{self.path}': steps {steps}: {why}")
        return steps

    def steps_refusal(self, steps: int) -> str | None:
        """Why this encoder cannot take `steps` refinements (below 1; above 1 where not iterative)."""
        if steps < 1:
            return "give at least 1"
        if steps > 1 and not self.iterative:
            return f"a {self.kind} encoder takes 1 step"
        return None

    def to(self, device: str | torch.device) -> LoadedEncoder:
        device = resolve_device(device)
        self.network.to(device)
        self.generator.generator.to(device)
        self.latent_avg = self.latent_avg.to(device)
        return self


def encoded(
    network: StyleEncoder,
    decoder: StyleGenerator,
    latent_avg: torch.Tensor,
    x: torch.Tensor,
    steps: int,
    iterative: bool,
    add_latent_avg: bool,
) -> torch.Tensor:
    """An encoder's codes for photos x [N, 3, 256, 256] in [-1, 1] -> W+ [N, n_latent, w_dim]; a
    function of modules and tensors only, so that nada-export traces the same computation."""
    start = latent_avg[None].expand(x.shape[0], -1, -1)
    if not iterative:
        codes = network(x)
        return codes + start if add_latent_avg else codes
    # ReStyle: each step sees the photo beside the current reconstruction and adds a correction;
    # the first reconstruction is the average image
    codes = start
    current = decoded_for_encoder(decoder, start[:1]).expand(x.shape[0], -1, -1, -1)
    for step in range(steps):
        codes = codes + network(torch.cat([x, current], dim=1))
        if step < steps - 1:
            current = decoded_for_encoder(decoder, codes)
    return codes


def decoded_for_encoder(decoder: StyleGenerator, codes: torch.Tensor) -> torch.Tensor:
    """The decoder's images of `codes` (stored noise) pooled to the encoder's 256 px, unclamped."""
    images = decoder.synthesis(codes, noise_mode="const")
    return F.adaptive_avg_pool2d(images, (INPUT_SIZE, INPUT_SIZE))


def preprocess(images) -> torch.Tensor:
    """uint8 [N, H, W, 3] (or a list of [H, W, 3]) -> [N, 3, 256, 256] in [-1, 1]: PIL's bilinear
    resize (nada_core.pngs.encoder_photos), then (x/255 - 0.5)/0.5."""
    x = torch.from_numpy(encoder_photos(images, INPUT_SIZE)).permute(0, 3, 1, 2)
    # contiguous NCHW: a channels-last view crashed torch 2.13's CPU convolution backward (narrow layers)
    return (x.float().contiguous() / 255.0 - 0.5) / 0.5


def load_encoder(path: str | Path, device: str | torch.device = "cpu") -> LoadedEncoder:
    """A pSp, e4e, ReStyle-pSp or ReStyle-e4e checkpoint (the authors' .pt files), read with
    weights_only=True: its encoder, its decoder as a generator, and its latent average. Also nada's
    own encoder files (.safetensors, their decoder beside them) and builtin:NAME, a built-in base's
    encoder (builtin:world)."""
    if str(path).startswith(BUILTIN_PREFIX):
        path = builtin_encoder(str(path)[len(BUILTIN_PREFIX) :])
    path = Path(path)
    if not path.is_file():
        raise NadaError(f"encoder '{path}': no such file; pass a pSp, e4e or ReStyle .pt checkpoint")
    if path.suffix == ".safetensors":
        ckpt, decoder = read_nada_encoder(path)
        return encoder_from_checkpoint(ckpt, str(path), sha256_file(path), decoder).to(device)
    ckpt = read_torch_file(path, what="encoder")
    return encoder_from_checkpoint(ckpt, str(path), sha256_file(path)).to(device)


def builtin_encoder(name: str) -> Path:
    """The encoder file of the built-in base NAME; refused in one line when it ships none."""
    from nada_train.bases import builtin_bases

    base = builtin_bases().get(name)
    if base is None or base.encoder is None or not base.encoder.is_file():
        known = sorted(n for n, b in builtin_bases().items() if b.encoder is not None and b.encoder.is_file())
        raise NadaError(
            f"encoder 'builtin:{name}': no built-in base of that name ships an encoder"
            + (f" (these do: {', '.join('builtin:' + n for n in known)})" if known else "")
        )
    return base.encoder


def encoder_from_checkpoint(
    ckpt: object, path: str, digest: str | None = None, decoder: LoadedGenerator | None = None
) -> LoadedEncoder:
    """load_encoder's work on a checkpoint already read: the kind from opts['encoder_type'], the
    number of codes and input channels from the tensors, the decoder from decoder.* (or `decoder`,
    for nada's own encoder files, which name theirs)."""
    state_of_decoder = encoder_decoder_state(ckpt) if isinstance(ckpt, dict) and decoder is None else None
    if decoder is None and state_of_decoder is None:
        raise NadaError(
            f"encoder '{path}': not a pSp/e4e/ReStyle checkpoint (expected 'state_dict' with encoder.* and "
            "decoder.* tensors)"
        )
    opts = ckpt.get("opts") or {}
    encoder_type = opts.get("encoder_type") if isinstance(opts, dict) else None
    if encoder_type not in ENCODER_TYPES:
        raise NadaError(
            f"encoder '{path}': encoder_type {encoder_type!r} in its opts; nada reads "
            f"{', '.join(ENCODER_TYPES)}"
        )
    kind, pyramid, progressive = ENCODER_TYPES[encoder_type]
    state = {k[len("encoder.") :]: v for k, v in ckpt["state_dict"].items() if k.startswith("encoder.")}
    n_styles = 1 + max((int(k.split(".")[1]) for k in state if k.startswith("styles.")), default=-1)
    in_channels = int(state["input_layer.0.weight"].shape[1]) if "input_layer.0.weight" in state else 3
    if kind.startswith("restyle") != (in_channels == 6):
        raise NadaError(
            f"encoder '{path}': a {kind} encoder with {in_channels} input channels (ReStyle's read 6: the "
            "photo and the current reconstruction; the others 3)"
        )
    stages = tuple(tuple(int(n) for n in stage) for stage in opts.get(STAGES_OPT, IR50_STAGES))
    with torch.device("meta"):  # no initial weights drawn: the checkpoint's tensors become the module's
        network = StyleEncoder(n_styles, in_channels, pyramid=pyramid, progressive=progressive, stages=stages)
    try:
        network.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:300]
        raise NadaError(f"encoder '{path}': tensors do not fit a {kind} encoder ({detail})") from None
    if decoder is None:
        decoder = LoadedGenerator(
            generator_from_state(*state_of_decoder, path).eval(), path, "rosinality", digest
        )
    generator = decoder.generator
    if generator.n_latent != n_styles:
        raise NadaError(
            f"encoder '{path}': {n_styles} codes from the encoder, but its decoder takes {generator.n_latent}"
        )
    latent_avg = ckpt.get("latent_avg")
    if latent_avg is None:
        latent_avg = generator.w_avg
    latent_avg = torch.as_tensor(latent_avg).float().reshape(-1, generator.config.style_dim)
    latent_avg = latent_avg.expand(n_styles, -1).clone()
    add = bool(opts.get("start_from_latent_avg", True)) or kind.startswith("restyle")
    return LoadedEncoder(network.eval().requires_grad_(False), decoder, kind, latent_avg, add, path, digest)


# nada's own encoder files (safetensors): encoder.* and latent_avg, the authors' opts as JSON, and the
# decoder by file name (beside the encoder) with its sha256
NADA_ENCODER_FORMAT = "nada-encoder/1"
STAGES_OPT = "nada_stages"  # opts key: the backbone's stages, when they are not the authors' IR-50


def save_encoder(
    network: StyleEncoder,
    kind: str,
    latent_avg: torch.Tensor,
    decoder: Path,
    path: str | Path,
    extra_metadata: dict[str, str] | None = None,
) -> None:
    """An encoder trained here, as safetensors (written atomically), its decoder named beside it
    (the same folder); extra_metadata: what its trainer measured, how it was made."""
    from nada_train.tensor_files import write_safetensors

    encoder_type = next(t for t, (k, *_) in ENCODER_TYPES.items() if k == kind)
    opts = {"encoder_type": encoder_type, "start_from_latent_avg": True}
    if network.stages != IR50_STAGES:
        opts[STAGES_OPT] = [list(stage) for stage in network.stages]
    tensors = {f"encoder.{k}": v.detach().contiguous().cpu() for k, v in network.state_dict().items()}
    tensors["latent_avg"] = latent_avg.detach().float().contiguous().cpu()
    decoder = Path(decoder)
    if decoder.resolve().parent != Path(path).resolve().parent:
        raise NadaError(
            f"encoder '{path}': its decoder {decoder} is in another folder; save the encoder beside it "
            "(the file names its decoder by file name)"
        )
    metadata = {
        "format": NADA_ENCODER_FORMAT,
        "opts": json.dumps(opts),
        "decoder": decoder.name,
        "decoder_sha256": sha256_file(decoder),
        **(extra_metadata or {}),
    }
    write_safetensors(tensors, path, metadata)


def read_nada_encoder(path: Path) -> tuple[dict, LoadedGenerator]:
    """A nada encoder file: the checkpoint as the authors' layout holds it, and its decoder, loaded
    from beside it and checked against the sha256 it was trained for."""
    from nada_train.tensor_files import read_safetensors

    metadata, tensors = read_safetensors(path, "encoder")
    if metadata.get("format") != NADA_ENCODER_FORMAT:
        raise NadaError(
            f"encoder '{path}': a safetensors file without nada's encoder metadata (format "
            f"{metadata.get('format')!r}); pass a pSp, e4e or ReStyle .pt checkpoint or a nada encoder"
        )
    decoder_path = path.parent / metadata["decoder"]
    decoder = load_generator(decoder_path)
    if decoder.sha256 != metadata["decoder_sha256"]:
        raise NadaError(
            f"encoder '{path}': its decoder {decoder_path} has changed since the encoder was trained (sha256 "
            f"{decoder.sha256[:12]}, the encoder records {metadata['decoder_sha256'][:12]})"
        )
    latent_avg = tensors.pop("latent_avg")
    return {"state_dict": tensors, "opts": json.loads(metadata["opts"]), "latent_avg": latent_avg}, decoder
