"""The StyleGAN-NADA step: G_frozen and G_train see the same latents; the directional CLIP loss pulls
G_train's images along the source->target direction; optionally only the layers whose W+ codes a
global CLIP loss moves most are trained at each step. The Trainer also writes what a run keeps
(samples, weights, resume state, manifest); nada_train.factory makes one, nada_train.loop runs it."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext
from functools import partial
from pathlib import Path

import torch

from nada_core.pngs import grid, save_png
from nada_core.seeds import z_batch
from nada_train.bases import base_owning
from nada_train.checkpoints import LoadedGenerator
from nada_train.compiled import compiled, drop_unchosen_gradients, step_begins
from nada_train.generator import StyleGenerator
from nada_train.images import to_uint8
from nada_train.interrupts import interrupts_deferred
from nada_train.layer_selection import (
    codes_with_layers,
    default_auto_k,
    layers_for_codes,
    manual_layers,
    select_codes,
    set_trainable,
)
from nada_train.losses import ClipGuide, anchor_loss
from nada_train.options import TrainOptions
from nada_train.run_dir import RunDir

# Adam as in the StyleGAN2 trainer the reference inherits: lazy-regularisation ratio 4/5.
REG_RATIO = 4 / 5


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

    def embedding(
        self, model, encode: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor
    ) -> torch.Tensor:
        if images is not self.images:  # not the memo's images: nothing to share
            return encode(images)
        if id(model) not in self.embeddings:
            self.embeddings[id(model)] = encode(images).clone()
        return self.embeddings[id(model)]


class Trainer:
    def __init__(
        self,
        opts: TrainOptions,
        run: RunDir,
        base: LoadedGenerator,
        g_train: StyleGenerator,
        guide: ClipGuide,
        device: torch.device,
        frozen_memo: FrozenMemo | None = None,
    ):
        self.opts, self.run, self.base, self.device, self.guide = opts, run, base, device, guide
        self.frozen_memo = frozen_memo
        self.g_frozen = base.generator.requires_grad_(False).eval()
        self.g_train = g_train.train()
        self.g_train.requires_grad_(False)
        # Adam over every synthesis parameter; those frozen in a step get no gradient and stay put.
        self.params = [p for n, p in g_train.named_parameters() if not n.startswith("style.")]
        self.optimizer = torch.optim.Adam(self.params, lr=opts.lr * REG_RATIO, betas=(0.0, 0.99**REG_RATIO))
        # training and layer selection alike, in the form the run asked for (fused or not)
        self.synthesize = compiled(partial(g_train.synthesis, fused=opts.fused), opts.compile)
        self.synthesize_frozen = compiled(partial(self.g_frozen.synthesis, fused=opts.fused), opts.compile)
        self.auto_k = opts.auto_layer_k or default_auto_k(g_train.n_latent)
        # never a slot for a code that trains nothing
        self.selectable_codes = codes_with_layers(g_train, opts.train_torgb)
        self.fixed_layers = None if opts.layers == "auto" else manual_layers(g_train, opts.layers)
        if self.fixed_layers and opts.train_torgb:
            self.fixed_layers += g_train.torgb_names()
        self.rng = torch.Generator().manual_seed(opts.seed)  # all of the run's randomness, saved for resume
        self.iteration = 0
        z_dim = g_train.config.z_dim
        self.sample_z = torch.from_numpy(z_batch(list(range(opts.n_sample)), z_dim)).to(device)
        self.frozen_samples: torch.Tensor | None = None  # the grid's top row never changes: drawn once
        self.autocast = (
            torch.autocast(device.type, dtype=torch.bfloat16) if opts.precision == "bf16" else nullcontext()
        )
        samples = sorted(run.samples_dir.glob("step-*.png")) if run.samples_dir.is_dir() else []
        self.latest_sample: Path | None = samples[-1] if samples else None  # the newest sample grid written

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
        z = torch.randn(self.opts.auto_layer_batch, self.g_train.config.z_dim, generator=self.rng).to(
            self.device
        )
        with torch.no_grad():
            w = self.g_frozen.mapping(z)
        with self.autocast:
            codes = select_codes(
                self.g_train,
                w,
                self.guide.global_,
                self.auto_k,
                self.opts.auto_layer_iters,
                candidates=self.selectable_codes,
                synthesis=self.synthesize,
            )
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
            if (
                self.opts.compile != "off"
            ):  # one graph for every choice: all layers get gradients, see nada_train.compiled
                for p in self.params:
                    p.requires_grad_(True)
            t_select = self._clock()
            ws = self._latents(self.opts.batch)
            with self.autocast:
                with torch.no_grad():
                    frozen = (
                        self.synthesize_frozen(ws)
                        if self.frozen_memo is None
                        else self.frozen_memo.synthesis(self.synthesize_frozen, ws)
                    )
                trained = self.synthesize(ws)
                t_gen = self._clock()
                loss, parts = self.guide.directional(frozen, trained, self.opts.global_weight)
                if self.opts.anchor_weight:
                    anchor = anchor_loss(frozen, trained)
                    loss = loss + self.opts.anchor_weight * anchor
            t_clip = self._clock()
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss is {float(loss)} at iteration {self.iteration + 1}")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.opts.compile != "off":
                drop_unchosen_gradients(self.params, chosen)
            t_backward = self._clock()
            grads = [p.grad for p in self.g_train.parameters() if p.grad is not None]
            if grads and not bool(
                torch.stack([torch.isfinite(g).all() for g in grads]).all()
            ):  # one wait for the GPU, not one per tensor
                raise FloatingPointError(f"gradient is not finite at iteration {self.iteration + 1}")
        except BaseException:
            self.rng.set_state(rng_before)
            self.optimizer.zero_grad(set_to_none=True)
            raise
        with interrupts_deferred():
            self.optimizer.step()
            self.iteration += 1
            t_end = self._clock()
            record = {
                "step": self.iteration,
                "loss": float(loss.detach()),
                "clip_losses": parts,
                **({"anchor_loss": float(anchor.detach())} if self.opts.anchor_weight else {}),
                "layers": layers,
                "seconds": t_end - t0,
                "phases": {
                    "layer_selection": t_select - t0,
                    "generator_forward": t_gen - t_select,
                    "clip_forward": t_clip - t_gen,
                    "backward": t_backward - t_clip,
                    "optimizer": t_end - t_backward,
                },
            }
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
        if self.frozen_samples is None:
            self.frozen_samples = self.sample_row(self.g_frozen)
        path = self.run.sample_path(self.iteration)
        rows = torch.cat([self.frozen_samples, self.sample_row(self.g_train)])
        save_png(grid(rows.cpu().numpy(), rows=2), path)
        self.latest_sample = path
        return path

    @torch.no_grad()
    def sample_row(self, g: StyleGenerator) -> torch.Tensor:
        """uint8 images of the sample seeds through `g` (the frozen mapping's w, truncated)."""
        images = []
        for z in self.sample_z.split(8):
            w = g.truncate(self.g_frozen.mapping(z), self.opts.sample_truncation)
            images.append(to_uint8(g.synthesis(g.broadcast(w)).float()))
        return torch.cat(images)


def manifest_for(trainer: Trainer, status: str) -> dict:
    o, base = trainer.opts, trainer.base
    return {  # RunDir.save adds the format, the time and the version
        "status": status,
        "iterations_done": trainer.iteration,
        "base": {
            "path": str(Path(base.source).resolve()) if base.kind != "random" else base.source,
            "sha256": base.sha256,
            "kind": base.kind,
        },
        "generator_config": base.generator.config.to_dict(),
        "source": o.source,
        "target": o.target,
        "target_images": o.target_images,
        "clip": [m.describe() for m in trainer.guide.models],
        "parametrization": o.parametrization,
        "layers": o.layers
        if o.layers != "auto"
        else {"auto": {"k": trainer.auto_k, "iters": o.auto_layer_iters, "batch": o.auto_layer_batch}},
        "arguments": o.to_json(),
    }
