"""Does a CLIP's directional gradient draw the target style, with no generator in the way?

    python -m nada_world.probe_clip --target sketch --lr 0.003 0.01 0.03 [--clip FILE]

Optimises the pixels of photo renders against the directional loss (photo -> target) and asks the
world CLIP and the judge what the result is. A CLIP whose gradient the judge reads as the target style
is worth adapting a generator with; one that only fools itself (CLIP says target, judge says photo)
is not. This is the gate for any new world CLIP.
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

import numpy as np
import torch

from nada_core.fileio import write_json
from nada_train.losses import ClipGuide
from nada_world.data import sample
from nada_world.evaluate import zero_shot_predict
from nada_world.models import CLIP_WEIGHTS, direction_templates, load_judge, load_world_clip
from nada_world.render import STYLES


@functools.lru_cache(maxsize=4)
def _models(clip_file: str, device: str):
    """The CLIP and the judge, loaded once per file and device (main probes several learning rates)."""
    return load_world_clip(Path(clip_file), device), load_judge()


def probe(
    target: str,
    lr: float,
    steps: int = 200,
    n: int = 32,
    clip_file: Path = CLIP_WEIGHTS,
    seed: int = 4,
    device: str = "cpu",
) -> tuple[dict[str, float], torch.Tensor, torch.Tensor]:
    """(rates, renders, optimised images): the CLIP's and the judge's share of target-style calls, the
    judge's content kept, the mean absolute change and the final directional similarity."""
    clip, judge = _models(str(clip_file), str(device))
    guide = ClipGuide([clip])
    guide.set_text_target("photo", target, direction_templates())
    batch = sample(n, np.random.default_rng(seed), style=0)
    renders = batch.images.to(device)
    x = renders.clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr)
    similarity = 1.0
    for _ in range(steps):
        loss, _ = guide.directional(renders, x.clamp(-1, 1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        similarity = 1 - float(loss.detach())
    out = x.detach().clamp(-1, 1)
    want = STYLES.index(target)
    clip_style = zero_shot_predict(clip.encode_images, clip.encode_texts, out)[0]
    out, renders = out.cpu(), renders.cpu()
    judged = judge.predict(out)
    kept = (judged["shape"] == batch.shape.numpy()) & (judged["colour"] == batch.colour.numpy())
    rates = {
        "lr": lr,
        "clip_target_rate": float((clip_style == want).float().mean()),
        "judge_target_rate": float(np.mean(judged["style"] == want)),
        "judge_content_kept": float(np.mean(kept)),
        "mean_abs_change": float((out - renders).abs().mean()),
        "directional_similarity": similarity,
    }
    return rates, renders, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", default="sketch", choices=[s for s in STYLES if s != "photo"])
    ap.add_argument("--lr", type=float, nargs="+", default=[0.003, 0.01, 0.03])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--clip", type=Path, default=CLIP_WEIGHTS, help="world CLIP weights (safetensors)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args()
    rows = []
    print(
        "| lr | CLIP says target | judge says target | judge: content kept | mean abs change | directional "
        "similarity |"
    )
    print("|---|---|---|---|---|---|")
    for lr in args.lr:
        r, _, _ = probe(args.target, lr, args.steps, clip_file=args.clip, device=args.device)
        rows.append(r)
        print(
            f"| {lr:g} | {r['clip_target_rate']:.2f} | {r['judge_target_rate']:.2f} | "
            f"{r['judge_content_kept']:.2f} | {r['mean_abs_change']:.3f} | {r['directional_similarity']:.3f} "
            "|",
            flush=True,
        )
    if args.json:
        write_json(args.json, {"clip": str(args.clip), "target": args.target, "rows": rows})


if __name__ == "__main__":
    main()
