"""Train the world's small CLIP contrastively on rendered image/caption pairs.

    python -m nada_world.train_clip --minutes 30 --threads 2
    python -m nada_world.train_clip --device cuda --workers 3 --minutes 2.5 --batch 512 --pool 16384 \
        --refresh 0.125 --seed 11

The second command made the first ResNet weights (an H100 shared with three other trainings,
scripts/gpu_session.sh; 1,304 steps; zero-shot style 1.00 / shape 0.984 / colour 1.00; in git as
nada_world/assets/clip.safetensors at commit c86926e). The shipped ones continue from them on the
2-core CPU, on renders with extreme backdrops: 45 minutes (1,487 steps, seed 12, lr 5e-4), then 32
minutes with style blends (738 steps):

    python -m nada_world.train_clip --init clip-h100.safetensors --minutes 45 --threads 2 --lr 5e-4 \
        --batch 256 --seed 12 --out clip-backdrops.safetensors
    python -m nada_world.train_clip --init clip-backdrops.safetensors --minutes 32 --threads 2 --lr 3e-4 \
        --batch 256 --blend 64 --seed 13

zero-shot style 0.997 / shape 0.991 / colour 1.00 on 1000 fresh renders; style on dark / usual / light
backdrops 0.996 / 1.00 / 0.992.

Captions with the same (style, shape, colour) are positives for each other. Images are augmented
(brightness, contrast, noise, blur, shifts) and the renderer varies paper, background and
brightness inside every style, so no style can be told apart by one global statistic.

Half of each batch is adversarial (--adv-eps, L2 PGD against the caption loss, radius eps in [-1, 1]
pixel units): the first world CLIP, a ViT trained without it, had a gradient of patch-grid noise
that fooled itself and not the judge (README, issue 5); this one's gradient draws what it means,
which is what the directional loss follows. --blend adds scenes rendered in two styles and mixed,
with the caption targets mixed alike (blend_loss). The image tower is open_clip's ModifiedResNet
(anti-aliased, no patch grid). Renders come from --workers processes into a pool on --device.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import typer
from safetensors.torch import save_file

from nada_core.fileio import atomic_path
from nada_train.clip.compat import import_open_clip
from nada_world.data import Batch, DevicePool, RenderedBatches, from_scenes, render_stream, sample
from nada_world.evaluate import prediction_accuracy, style_accuracy_by_backdrop, zero_shot_predict
from nada_world.models import ASSETS, CAPTION_TEMPLATES, CLIP_WEIGHTS, augment, caption
from nada_world.render import COLOURS, SHAPES, STYLES, random_scene
from nada_world.script import (
    TimeBudget,
    cosine,
    minutes_option,
    run_script,
    script_app,
    set_lr,
    set_up,
    threads_option,
)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return -(targets * F.log_softmax(logits, dim=1)).sum(1).mean()


def caption_loss(
    model, images: torch.Tensor, text: torch.Tensor, combo: torch.Tensor, symmetric: bool = True
) -> torch.Tensor:
    """Contrastive loss of CLIP-input images (the first len(images) rows of the batch) against the
    batch's normalised caption embeddings; every caption of the same combo is a positive.
    symmetric=False: the image-to-text half alone (what an attack on the images raises)."""
    img = F.normalize(model.encode_image(images), dim=-1)
    logits = model.logit_scale.exp().clamp(max=100) * img @ text.T
    pos = (combo[: len(images), None] == combo[None, :]).float()
    loss = soft_cross_entropy(logits, pos / pos.sum(1, keepdim=True))
    if symmetric:
        loss = (loss + soft_cross_entropy(logits.T, pos.T / pos.T.sum(1, keepdim=True))) / 2
    return loss


def style_pairs(n: int, rng: np.random.Generator) -> tuple[Batch, Batch]:
    """n random scenes, each rendered twice: in its own style and in another one (same shape, colour,
    place and backdrop)."""
    scenes = [random_scene(rng) for _ in range(n)]
    others = [replace(s, style=(s.style + int(rng.integers(1, len(STYLES)))) % len(STYLES)) for s in scenes]
    return from_scenes(scenes, rng), from_scenes(others, rng)


def blend(images_a: torch.Tensor, images_b: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """(1 - alpha) a + alpha b, per image."""
    a = alpha.view(-1, 1, 1, 1)
    return (1 - a) * images_a + a * images_b


def blend_loss(
    model,
    blends: torch.Tensor,
    combo_a: torch.Tensor,
    combo_b: torch.Tensor,
    alpha: torch.Tensor,
    prototypes: torch.Tensor,
) -> torch.Tensor:
    """Cross-entropy of CLIP-input blends (1 - alpha) a + alpha b of one scene in two styles against
    every combo's caption embedding (prototypes, in combo order), with target weight 1 - alpha on a's
    combo and alpha on b's. Why: the directional loss follows the CLIP's gradient from a photo; trained
    on blends, "more sketch" at a photo points towards the sketch of the same content, not towards
    whatever else the CLIP took for sketch."""
    img = F.normalize(model.encode_image(blends), dim=-1)
    logits = model.logit_scale.exp().clamp(max=100) * img @ prototypes.T
    target = torch.zeros_like(logits)
    rows = torch.arange(len(img), device=img.device)
    target[rows, combo_a] += 1 - alpha
    target[rows, combo_b] += alpha
    return soft_cross_entropy(logits, target)


def combo_captions(template: int) -> list[str]:
    """One caption per (style, shape, colour), in Batch.combo order."""
    return [caption(st, co, sh, template) for st in STYLES for sh in SHAPES for co in COLOURS]


def pgd_l2(loss_of, x: torch.Tensor, eps: float, steps: int) -> torch.Tensor:
    """Images within L2 distance eps of x (each) that raise loss_of(images): normalised-gradient
    ascent, projected back onto the ball after every step."""
    delta = torch.zeros_like(x, requires_grad=True)
    alpha = 2.5 * eps / steps
    for _ in range(steps):
        (grad,) = torch.autograd.grad(loss_of((x + delta).clamp(-1, 1)), delta)
        grad = grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        delta = delta.detach() + alpha * grad
        scale = (eps / delta.flatten(1).norm(dim=1).clamp_min(1e-12)).clamp(max=1).view(-1, 1, 1, 1)
        delta = (delta * scale).requires_grad_(True)
    return (x + delta).detach().clamp(-1, 1)


app = script_app(__doc__)


@app.command(help=__doc__)
def main(
    minutes: float = minutes_option(12),
    batch: int = typer.Option(256),
    lr: float = typer.Option(
        1e-3, help="Peak learning rate (100 warm-up steps, cosine decay over the time budget)."
    ),
    seed: int = typer.Option(0),
    threads: int = threads_option(),
    model: str = typer.Option("nada-world-clip-rn", help="open_clip config in nada_world/assets/."),
    init: Path | None = typer.Option(None, help="Continue from these weights."),
    adv_eps: float = typer.Option(1.5, help="L2 radius of the adversarial images (0: none)."),
    adv_steps: int = typer.Option(3, help="PGD steps per adversarial batch."),
    blend_scenes: int = typer.Option(
        0,
        "--blend",
        help="Scenes per step rendered in two styles and blended, with soft caption targets (0: none).",
    ),
    device: str = typer.Option("cpu"),
    workers: int = typer.Option(0, help="Render processes (0: render in this one)."),
    pool_size: int = typer.Option(8192, "--pool", help="Renders kept on the device."),
    refresh: float = typer.Option(0.15, help="Share of a batch rendered fresh each step."),
    out: Path = typer.Option(CLIP_WEIGHTS, help="Weights file to write."),
) -> None:
    set_up(threads, seed)
    device_ = torch.device(device)
    open_clip = import_open_clip()
    open_clip.add_model_config(ASSETS)
    clip = open_clip.create_model(model, pretrained=str(init) if init else None).to(device_)
    tokenizer = open_clip.get_tokenizer(model)
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN, device=device_).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD, device=device_).view(1, 3, 1, 1)
    norm = lambda x: ((x + 1) / 2 - mean) / std  # noqa: E731  (as ClipModel.preprocess at 64 px)
    decay = [p for n, p in clip.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in clip.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}], lr=lr
    )
    renders = render_stream(RenderedBatches(max(1, int(refresh * batch)), seed), workers)
    pool = DevicePool(
        ({"images": b.images, "combo": b.combo, "tokens": tokenizer(b.captions)} for b in renders),
        pool_size,
        device_,
    )
    gen = torch.Generator(device_).manual_seed(seed)
    blend_rng = np.random.default_rng([seed, 1])
    print(
        f"{model}: {sum(p.numel() for p in clip.parameters()) / 1e6:.2f} M parameters; pool of {pool.size} on "
        f"{device_}",
        flush=True,
    )
    budget = TimeBudget(minutes)
    clip.train()
    while budget.running():
        set_lr([opt], lr * min(1.0, (budget.steps + 1) / 100) * cosine(budget.fraction))
        pool.refresh()
        drawn = pool.draw(batch, gen)
        images, combo, tokens = drawn["images"], drawn["combo"], drawn["tokens"]
        images = augment(images, gen)
        text = F.normalize(clip.encode_text(tokens), dim=-1)
        if adv_eps > 0:
            half = len(images) // 2
            fixed_text = text.detach()
            attack = lambda x: caption_loss(clip, norm(x), fixed_text, combo, symmetric=False)  # noqa: E731, B023
            images = torch.cat([pgd_l2(attack, images[:half], adv_eps, adv_steps), images[half:]])
        loss = caption_loss(clip, norm(images), text, combo)
        if blend_scenes:
            a, b = style_pairs(blend_scenes, blend_rng)
            prototypes = F.normalize(
                clip.encode_text(
                    tokenizer(combo_captions(int(blend_rng.integers(len(CAPTION_TEMPLATES))))).to(device_)
                ),
                dim=-1,
            )
            alpha = torch.rand(blend_scenes, generator=gen, device=device_)
            blends = augment(blend(a.images.to(device_), b.images.to(device_), alpha), gen)
            loss = loss + blend_loss(
                clip, norm(blends), a.combo.to(device_), b.combo.to(device_), alpha, prototypes
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if budget.step() % 50 == 0:
            print(
                f"step {budget.steps} {budget.elapsed:6.0f}s loss {loss.item():.3f} scale "
                f"{clip.logit_scale.exp().item():.1f}",
                flush=True,
            )
    clip.eval()
    test = sample(1000, np.random.default_rng(10_000 + seed))
    enc_i = lambda x: F.normalize(clip.encode_image(norm(x.to(device_))), dim=-1).cpu()  # noqa: E731
    enc_t = lambda t: F.normalize(clip.encode_text(tokenizer(t).to(device_)), dim=-1).cpu()  # noqa: E731
    predicted = zero_shot_predict(enc_i, enc_t, test.images)
    acc = prediction_accuracy(predicted, test.style, test.shape, test.colour)
    print("zero-shot accuracy on 1000 fresh renders:", json.dumps(acc), flush=True)
    by_backdrop = style_accuracy_by_backdrop(predicted[0].numpy(), test.scenes)
    print("style accuracy by backdrop:", json.dumps(by_backdrop), flush=True)
    state = {
        k: (v.detach().half() if v.is_floating_point() else v).cpu().contiguous()
        for k, v in clip.state_dict().items()
    }
    meta = {
        "model": model,
        "zero_shot": json.dumps(acc),
        "style_by_backdrop": json.dumps(by_backdrop),
        "steps": str(budget.steps),
        "minutes": str(minutes),
        "adversarial": json.dumps({"eps": adv_eps, "steps": adv_steps}),
        "blend": str(blend_scenes),
        "batch": str(batch),
        "init": init.name if init else "",
    }
    with atomic_path(out) as tmp:
        save_file(state, str(tmp), metadata=meta)
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB) after {budget.steps} steps", flush=True)


if __name__ == "__main__":
    run_script(app, "nada_world.train_clip")
