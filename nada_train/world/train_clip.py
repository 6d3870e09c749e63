"""Train the world's small CLIP contrastively on rendered image/caption pairs.

    python -m nada_train.world.train_clip --minutes 12 --out nada_train/world/assets/clip.safetensors

Captions with the same (style, shape, colour) are positives for each other. Images are augmented
(brightness, contrast, noise, blur, shifts) and the renderer varies paper, background and
brightness inside every style, so no style can be told apart by one global statistic.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from nada_train.clip.compat import import_open_clip
from nada_train.fileio import atomic_path
from nada_train.world.data import Pool, sample
from nada_train.world.evaluate import zero_shot_accuracy
from nada_train.world.models import ASSETS, CLIP_NAME, CLIP_WEIGHTS, augment


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return -(targets * F.log_softmax(logits, dim=1)).sum(1).mean()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=12)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--init", type=Path, help="continue from these weights")
    ap.add_argument("--out", type=Path, default=CLIP_WEIGHTS)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    open_clip = import_open_clip()
    open_clip.add_model_config(ASSETS)
    model = open_clip.create_model(CLIP_NAME, pretrained=str(args.init) if args.init else None)
    tokenizer = open_clip.get_tokenizer(CLIP_NAME)
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    norm = lambda x: ((x + 1) / 2 - mean) / std  # noqa: E731  (as ClipModel.preprocess at 64 px)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}], lr=args.lr)
    pool = Pool(8192, seed=args.seed, refresh=0.15)
    gen = torch.Generator().manual_seed(args.seed)
    budget, t0, step = args.minutes * 60, time.time(), 0
    model.train()
    while time.time() - t0 < budget:
        frac = (time.time() - t0) / budget
        for g in opt.param_groups:
            g["lr"] = args.lr * min(1.0, (step + 1) / 100) * 0.5 * (1 + math.cos(math.pi * frac))
        b = pool.draw(args.batch)
        img = F.normalize(model.encode_image(norm(augment(b.images, gen))), dim=-1)
        txt = F.normalize(model.encode_text(tokenizer(b.captions)), dim=-1)
        logits = model.logit_scale.exp().clamp(max=100) * img @ txt.T
        pos = (b.combo[:, None] == b.combo[None, :]).float()
        targets = pos / pos.sum(1, keepdim=True)
        loss = (soft_cross_entropy(logits, targets) + soft_cross_entropy(logits.T, targets)) / 2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % 50 == 0:
            print(f"step {step} {time.time() - t0:6.0f}s loss {loss.item():.3f} scale {model.logit_scale.exp().item():.1f}", flush=True)
    model.eval()
    test = sample(1000, np.random.default_rng(10_000 + args.seed))
    enc_i = lambda x: F.normalize(model.encode_image(norm(x)), dim=-1)  # noqa: E731
    enc_t = lambda t: F.normalize(model.encode_text(tokenizer(t)), dim=-1)  # noqa: E731
    acc = zero_shot_accuracy(enc_i, enc_t, test.images, test.style, test.shape, test.colour)
    print("zero-shot accuracy on 1000 fresh renders:", json.dumps(acc), flush=True)
    state = {k: v.detach().half().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(args.out) as tmp:
        save_file(state, str(tmp), metadata={"zero_shot": json.dumps(acc), "steps": str(step), "minutes": str(args.minutes)})
    print(f"wrote {args.out} ({args.out.stat().st_size / 2**20:.1f} MiB) after {step} steps", flush=True)


if __name__ == "__main__":
    main()
