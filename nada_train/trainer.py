"""The StyleGAN-NADA training loop: G_frozen and G_train see the same latents; the directional CLIP
loss pulls G_train's images along the source->target direction; optionally only the layers whose
W+ codes a global CLIP loss moves most are trained at each step."""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from typing import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from nada_train.bases import base_owning
from nada_train.checkpoints import LoadedGenerator, load_generator
from nada_train.clip import ClipSpec, load_clip
from nada_train.compiled import COMPILE_CHOICES, check_compile, compiled, drop_unchosen_gradients, step_begins
from nada_train.errors import NadaError
from nada_train.generator import Generator
from nada_train.images import to_uint8
from nada_train.pngs import grid, save_png
from nada_train.seeds import z_batch
from nada_train.interrupts import interrupts_deferred, sigterm_as_interrupt
from nada_train.layer_selection import (LAYER_CHOICES, codes_with_layers, default_auto_k, layers_for_codes, manual_layers, select_codes,
                                       set_trainable)
from nada_train.losses import ClipGuide, load_style_images
from nada_train.run_dir import RunDir

# Adam as in the StyleGAN2 trainer the reference inherits: lazy-regularisation ratio 4/5.
REG_RATIO = 4 / 5


@dataclass
class TrainOptions:
    generator: str
    out: str
    source: str = "photo"
    target: str | None = None
    target_images: str | None = None
    clip: list[ClipSpec] = field(default_factory=lambda: [ClipSpec("ViT-B-32")])
    templates: list[str] | None = None  # prompt templates with "{}"; None: the reference's 79 ImageNet ones
    crop: list[int] | None = None  # (left, top, right, bottom): the part of the frame that is content
    iterations: int = 300
    batch: int = 2
    lr: float = 0.002
    layers: str = "auto"
    auto_layer_k: int | None = None
    auto_layer_iters: int = 1
    auto_layer_batch: int = 8
    train_torgb: bool = False
    mixing: float = 0.0
    global_weight: float = 0.0
    seed: int = 2
    device: str = "auto"
    precision: str = "fp32"
    tf32: bool = True
    fused: bool = False
    compile: str = "off"  # off, inductor or cudagraphs: the step's synthesis and CLIP calls compiled (nada_train.compiled)
    n_sample: int = 8
    sample_truncation: float = 0.7
    sample_every: int = 50
    save_every: int = 100  # a resumable state and a numbered snapshot every N iterations
    allow_pickle: bool = False

    def to_json(self) -> dict:
        return asdict(self)  # nested ClipSpecs become dicts too

    @classmethod
    def from_json(cls, d: dict) -> "TrainOptions":
        d = dict(d)
        d["clip"] = [ClipSpec(**c) for c in d["clip"]]
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})

    def validate(self) -> None:
        if self.target_images is None:
            if self.target is None or not self.target.strip():
                raise NadaError("--target is empty; name the new domain, e.g. --target 'pencil sketch' (or pass --target-images DIR)")
            if not self.source.strip():
                raise NadaError("--source is empty; name the generator's domain, e.g. --source photo")
            if self.source.strip().lower() == self.target.strip().lower():
                raise NadaError(f"--source and --target are both '{self.source}'; the direction between them is zero, name a different target")
        if self.layers not in LAYER_CHOICES:
            raise NadaError(f"--layers '{self.layers}': choose one of {', '.join(LAYER_CHOICES)}")
        for name, value, low in (("--iterations", self.iterations, 1), ("--batch", self.batch, 1), ("--n-sample", self.n_sample, 1),
                                 ("--auto-layer-batch", self.auto_layer_batch, 1), ("--auto-layer-iters", self.auto_layer_iters, 1),
                                 ("--sample-every", self.sample_every, 1), ("--save-every", self.save_every, 1)):
            if value < low:
                raise NadaError(f"{name} {value}: must be at least {low}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise NadaError(f"--lr {self.lr}: must be a positive number")
        if not 0 <= self.mixing <= 1:
            raise NadaError(f"--mixing {self.mixing}: a probability, between 0 and 1")
        if not math.isfinite(self.sample_truncation):
            raise NadaError(f"--sample-truncation {self.sample_truncation}: must be a number (1 = no truncation, 0.7 is common)")
        if not (self.global_weight >= 0 and math.isfinite(self.global_weight)):
            raise NadaError(f"--global-weight {self.global_weight}: must be 0 (off) or a positive number")
        if self.crop is not None and (len(self.crop) != 4 or not all(isinstance(v, int) for v in self.crop)):
            raise NadaError(f"--crop {self.crop}: give the box as LEFT,TOP,RIGHT,BOTTOM in pixels, e.g. --crop 0,64,512,448")
        if self.compile not in COMPILE_CHOICES:
            raise NadaError(f"--compile {self.compile}: choose one of {', '.join(COMPILE_CHOICES)}")
        if self.precision not in ("fp32", "bf16"):
            raise NadaError(f"--precision {self.precision}: choose fp32 or bf16")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise NadaError(f"--device '{name}': not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise NadaError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    return device


class FrozenMemo:
    """The frozen generator's images for the last W+ codes, and their CLIP embeddings. Targets trained
    in one process from one seed draw the same codes each step, so these are computed once a step for
    all of them (the values are the ones each would compute alone). Kept as copies: a CUDA-graph
    replay may reuse the memory of a compiled call's outputs."""

    def __init__(self):
        self.ws: torch.Tensor | None = None
        self.images: torch.Tensor | None = None
        self.embeddings: dict[int, torch.Tensor] = {}

    def synthesis(self, synthesize: Callable[[torch.Tensor], torch.Tensor], ws: torch.Tensor) -> torch.Tensor:
        if self.ws is None or self.ws.shape != ws.shape or not torch.equal(self.ws, ws):
            with torch.no_grad():
                self.ws, self.images, self.embeddings = ws.clone(), synthesize(ws).clone(), {}
        return self.images

    def embedding(self, model, encode: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor) -> torch.Tensor:
        if images is not self.images:  # not the memo's images: nothing to share
            return encode(images)
        if id(model) not in self.embeddings:
            self.embeddings[id(model)] = encode(images).clone()
        return self.embeddings[id(model)]


class Trainer:
    def __init__(self, opts: TrainOptions, run: RunDir, base: LoadedGenerator, g_train: Generator, guide: ClipGuide, device: torch.device,
                 frozen_memo: FrozenMemo | None = None):
        self.opts, self.run, self.base, self.device, self.guide = opts, run, base, device, guide
        self.frozen_memo = frozen_memo
        self.g_frozen = base.generator.requires_grad_(False).eval()
        self.g_train = g_train.train()
        self.g_train.requires_grad_(False)
        self.g_frozen.set_fused(opts.fused)
        self.g_train.set_fused(opts.fused)
        # Adam over every synthesis parameter; those frozen in a step get no gradient and stay put.
        self.params = [p for n, p in g_train.named_parameters() if not n.startswith("style.")]
        self.optimizer = torch.optim.Adam(self.params, lr=opts.lr * REG_RATIO, betas=(0.0, 0.99**REG_RATIO))
        self.synthesize = compiled(g_train.synthesis, opts.compile)  # training and layer selection alike
        self.synthesize_frozen = compiled(self.g_frozen.synthesis, opts.compile)
        self.auto_k = opts.auto_layer_k or default_auto_k(g_train.n_latent)
        self.selectable_codes = codes_with_layers(g_train, opts.train_torgb)  # never a slot for a code that trains nothing
        self.fixed_layers = None if opts.layers == "auto" else manual_layers(g_train, opts.layers)
        if self.fixed_layers and opts.train_torgb:
            self.fixed_layers += g_train.torgb_names()
        self.rng = torch.Generator().manual_seed(opts.seed)  # all of the run's randomness, saved for resume
        self.iteration = 0
        z_dim = g_train.config.z_dim
        self.sample_z = torch.from_numpy(z_batch(list(range(opts.n_sample)), z_dim)).to(device)
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16) if opts.precision == "bf16" else nullcontext()

    # ---- state -------------------------------------------------------------------------------
    def state(self) -> dict:
        """Everything a resumed run needs, in one file written at once: G_train's weights travel
        here too, so a crash between writing generator.safetensors and this file cannot pair
        weights of one iteration with optimizer state of another."""
        return {
            "iteration": self.iteration,
            "generator": {k: v.detach().cpu() for k, v in self.g_train.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "rng": self.rng.get_state(),
        }

    def load_state(self, state: dict) -> None:
        self.iteration = int(state["iteration"])
        self.g_train.load_state_dict(state["generator"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.rng.set_state(state["rng"])

    # ---- one step ----------------------------------------------------------------------------
    def _latents(self, n: int) -> torch.Tensor:
        """W+ codes for n samples from the frozen mapping (never trained), with style mixing."""
        z_dim = self.g_train.config.z_dim
        z = torch.randn(n, z_dim, generator=self.rng).to(self.device)
        with torch.no_grad():
            w = self.g_frozen.mapping(z)
            if float(torch.rand(1, generator=self.rng)) < self.opts.mixing:
                z2 = torch.randn(n, z_dim, generator=self.rng).to(self.device)
                index = int(torch.randint(1, self.g_train.n_latent, (1,), generator=self.rng))
                return self.g_frozen.mix(w, self.g_frozen.mapping(z2), index)
            return self.g_frozen.broadcast(w)

    def choose_layers(self) -> tuple[list[str], list[int] | None]:
        if self.fixed_layers is not None:
            return self.fixed_layers, None
        z = torch.randn(self.opts.auto_layer_batch, self.g_train.config.z_dim, generator=self.rng).to(self.device)
        with torch.no_grad():
            w = self.g_frozen.mapping(z)
        with self.autocast:
            codes = select_codes(self.g_train, w, self.guide.global_, self.auto_k, self.opts.auto_layer_iters,
                                 candidates=self.selectable_codes, synthesis=self.synthesize)
        return layers_for_codes(self.g_train, codes, self.opts.train_torgb), codes

    def _clock(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def step(self, on_commit: Callable[[dict], None] | None = None) -> dict:
        """One iteration; the record says where its time went (seconds per phase).

        The step is a transaction: until its commit nothing of the run's state (weights, optimizer,
        RNG, iteration) has changed for good; an exception or Ctrl-C before the commit rolls the RNG
        back, and the commit itself (optimizer update, iteration count, `on_commit(record)`, which
        train() uses to log) runs with Ctrl-C held. So an interrupted run saves the state of the
        last whole step, wherever the interrupt landed, and a resumed run equals an uninterrupted one.
        """
        rng_before = self.rng.get_state()
        try:
            t0 = self._clock()
            step_begins(self.opts.compile)
            layers, codes = self.choose_layers()
            chosen = set_trainable(self.g_train, layers)
            if self.opts.compile != "off":  # one graph for every choice: all layers get gradients, see nada_train.compiled
                for p in self.params:
                    p.requires_grad_(True)
            t_select = self._clock()
            ws = self._latents(self.opts.batch)
            with self.autocast:
                with torch.no_grad():
                    frozen = (self.synthesize_frozen(ws) if self.frozen_memo is None
                              else self.frozen_memo.synthesis(self.synthesize_frozen, ws))
                trained = self.synthesize(ws)
                t_gen = self._clock()
                loss, parts = self.guide.directional(frozen, trained, self.opts.global_weight)
            t_clip = self._clock()
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss is {float(loss)} at iteration {self.iteration + 1}")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.opts.compile != "off":
                drop_unchosen_gradients(self.params, chosen)
            t_backward = self._clock()
            grads = [p.grad for p in self.g_train.parameters() if p.grad is not None]
            if grads and not bool(torch.stack([torch.isfinite(g).all() for g in grads]).all()):  # one wait for the GPU, not one per tensor
                raise FloatingPointError(f"gradient is not finite at iteration {self.iteration + 1}")
        except BaseException:
            self.rng.set_state(rng_before)
            self.optimizer.zero_grad(set_to_none=True)
            raise
        with interrupts_deferred():
            self.optimizer.step()
            self.iteration += 1
            t_end = self._clock()
            record = {"step": self.iteration, "loss": float(loss.detach()), "clip_losses": parts, "layers": layers,
                      "seconds": t_end - t0,
                      "phases": {"layer_selection": t_select - t0, "generator_forward": t_gen - t_select,
                                 "clip_forward": t_clip - t_gen, "backward": t_backward - t_clip, "optimizer": t_end - t_backward}}
            if codes is not None:
                record["codes"] = codes
            if on_commit is not None:
                on_commit(record)
        return record

    # ---- what a run writes -------------------------------------------------------------------
    def save(self, status: str) -> None:
        """The run's weights, resume state and manifest, with this status."""
        self.run.save(self.g_train, self.state(), manifest_for(self, status))

    def start(self) -> None:
        """A new run's directory, its first samples and a resumable state at iteration 0."""
        self.run.create()
        self.write_samples()
        self.save("running")

    def judge(self) -> None:
        """A built-in base's own verdict on a finished text-guided run: metrics.json."""
        base = base_owning(self.opts.generator)
        if base is not None and base.evaluate is not None and self.opts.target is not None:
            base.evaluate(self.run.path, str(self.device))

    # ---- samples -----------------------------------------------------------------------------
    @torch.no_grad()
    def write_samples(self) -> Path:
        rows = []
        for g in (self.g_frozen, self.g_train):
            imgs = []
            for z in self.sample_z.split(8):
                w = g.truncate(self.g_frozen.mapping(z), self.opts.sample_truncation)
                imgs.append(to_uint8(g.synthesis(g.broadcast(w)).float()))
            rows.append(torch.cat(imgs))
        path = self.run.sample_path(self.iteration)
        save_png(grid(torch.cat(rows).cpu().numpy(), rows=2), path)
        return path


def build(opts: TrainOptions, run: RunDir, resume: bool) -> Trainer:
    opts.validate()
    device = resolve_device(opts.device)
    base = load_base(opts, device)
    g_train = load_generator(opts.generator, device, allow_pickle=opts.allow_pickle).generator
    if opts.crop is not None:
        g_train.set_crop(opts.crop)  # recorded in its config: nada-generate, nada-export and serving use the box too
    return make_trainer(opts, run, resume, device, base, [load_clip(spec, device) for spec in opts.clip], g_train)


def load_base(opts: TrainOptions, device: torch.device) -> LoadedGenerator:
    """The frozen base, cropped as asked; CUDA's TF32 switches set; --compile checked against the device."""
    check_compile(opts.compile, device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = opts.tf32
        torch.backends.cudnn.allow_tf32 = opts.tf32
    base = load_generator(opts.generator, device, allow_pickle=opts.allow_pickle)
    if base.kind == "run":
        raise NadaError(f"--generator '{opts.generator}' is a run directory; adapt its base, or export/generate from it")
    if opts.crop is not None:
        try:
            base.generator.set_crop(opts.crop)
        except ValueError as exc:
            raise NadaError(f"--crop {','.join(map(str, opts.crop))}: {exc}") from None
    return base


def make_trainer(opts: TrainOptions, run: RunDir, resume: bool, device: torch.device, base: LoadedGenerator,
                 clips: list, g_train: Generator, frozen_memo: "FrozenMemo | None" = None) -> Trainer:
    """A Trainer for one target from inputs already loaded (several targets share the base and CLIP models)."""
    if resume:
        manifest = run.read_manifest()
        recorded = manifest["base"].get("sha256")
        if recorded and base.sha256 != recorded:
            raise NadaError(f"--resume: base checkpoint '{opts.generator}' changed since the run started (sha256 differs); restore it to resume")
        state = run.load_state()
        if "generator" not in state:
            raise NadaError(f"--resume '{run.path}': its resume state was written by an older nada without the weights; "
                            f"start a new run from {run.generator_path} instead")
    guide = ClipGuide(clips, frozen_memo, opts.compile)
    if opts.target_images:
        style = load_style_images(opts.target_images)
        z = torch.randn(16, base.generator.config.z_dim, generator=torch.Generator().manual_seed(opts.seed)).to(device)
        with torch.no_grad():
            source = base.generator(z)
        guide.set_image_target(source, style.to(device))
    else:
        guide.set_text_target(opts.source, opts.target, opts.templates)
    trainer = Trainer(opts, run, base, g_train, guide, device, frozen_memo)
    if resume:
        try:
            trainer.load_state(state)
        except RuntimeError as exc:  # shapes of another generator
            detail = " ".join(str(exc).split())[:200]
            raise NadaError(f"--resume '{run.path}': its saved weights do not fit the base checkpoint ({detail})") from None
        run.truncate_log(trainer.iteration)
    return trainer


def manifest_for(trainer: Trainer, status: str) -> dict:
    o, base = trainer.opts, trainer.base
    return {  # RunDir.save adds the format, the time and the version
        "status": status,
        "iterations_done": trainer.iteration,
        "base": {"path": str(Path(base.source).resolve()) if base.kind != "random" else base.source,
                 "sha256": base.sha256, "kind": base.kind},
        "generator_config": base.generator.config.to_dict(),
        "source": o.source, "target": o.target, "target_images": o.target_images,
        "clip": [m.describe() for m in trainer.guide.models],
        "layers": o.layers if o.layers != "auto" else {"auto": {"k": trainer.auto_k, "iters": o.auto_layer_iters, "batch": o.auto_layer_batch}},
        "arguments": o.to_json(),
    }


def advance(trainer: Trainer, bar: tqdm) -> None:
    """One step of a run, with its log line, samples, saves and snapshots when they fall due."""
    opts, run = trainer.opts, trainer.run
    record = trainer.step(on_commit=run.log)
    bar.update(1)
    bar.set_postfix(loss=f"{record['loss']:.4f}", s_it=f"{record['seconds']:.2f}")
    done = trainer.iteration == opts.iterations
    if done or trainer.iteration % opts.sample_every == 0:
        trainer.write_samples()
    if trainer.iteration % opts.save_every == 0:
        trainer.save("finished" if done else "running")
        run.save_snapshot(trainer.g_train, trainer.iteration)
    elif done:
        trainer.save("finished")


def train(opts: TrainOptions, resume: bool = False, progress: bool = True) -> Path:
    """Run (or continue) a training run; returns the run directory. Ctrl-C saves a resumable state."""
    run = RunDir(opts.out)
    if not resume:
        opts.validate()
        run.check_new()
    trainer = build(opts, run, resume)  # every input is loaded before anything is written
    if not resume:
        trainer.start()
    bar = tqdm(total=opts.iterations, initial=trainer.iteration, disable=not progress, unit="it", dynamic_ncols=True,
               desc=f"{opts.source} -> {opts.target or Path(opts.target_images).name}")
    try:
        with sigterm_as_interrupt():
            while trainer.iteration < opts.iterations:
                advance(trainer, bar)
    except KeyboardInterrupt:
        bar.close()
        trainer.save("interrupted")
        raise NadaError(f"interrupted at iteration {trainer.iteration}; state saved, continue with: nada-train --resume {run.path}") from None
    except FloatingPointError as exc:
        bar.close()
        trainer.save("failed-nan")
        raise NadaError(f"{exc}; the last good state (iteration {trainer.iteration}) is saved in {run.path}; lower --lr or use --precision fp32") from None
    bar.close()
    trainer.judge()
    return run.path
