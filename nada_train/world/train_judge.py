"""Train the judge: a CNN that names the style, shape and colour of a render. It decides the
adaptation metrics and is never used as a loss.

    python -m nada_train.world.train_judge --minutes 8 --threads 2

made the shipped weights on the 2-core CPU (1,705 steps; style 0.999 / shape 0.997 / colour 1.00 on
1000 fresh renders, extreme backdrops included).
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

from nada_train.fileio import atomic_path
from nada_train.world.data import Pool, sample
from nada_train.world.evaluate import prediction_accuracy, style_accuracy_by_backdrop
from nada_train.world.models import JUDGE_WEIGHTS, Judge, augment


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=8)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", type=Path, default=JUDGE_WEIGHTS)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    judge = Judge()
    opt = torch.optim.AdamW(judge.parameters(), lr=args.lr, weight_decay=1e-4)
    pool = Pool(8192, seed=args.seed, refresh=0.15)
    gen = torch.Generator().manual_seed(args.seed)
    budget, t0, step = args.minutes * 60, time.time(), 0
    judge.train()
    while time.time() - t0 < budget:
        frac = (time.time() - t0) / budget
        for g in opt.param_groups:
            g["lr"] = args.lr * 0.5 * (1 + math.cos(math.pi * frac))
        b = pool.draw(args.batch)
        out = judge(augment(b.images, gen))
        loss = F.cross_entropy(out["style"], b.style) + F.cross_entropy(out["shape"], b.shape) + F.cross_entropy(out["colour"], b.colour)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % 50 == 0:
            print(f"step {step} {time.time() - t0:6.0f}s loss {loss.item():.3f}", flush=True)
    test = sample(1000, np.random.default_rng(20_000 + args.seed))
    predicted = judge.predict(test.images)
    acc = prediction_accuracy((predicted["style"], predicted["shape"], predicted["colour"]), test.style, test.shape, test.colour)
    print("accuracy on 1000 fresh renders:", json.dumps(acc), flush=True)
    by_backdrop = style_accuracy_by_backdrop(predicted["style"], test.scenes)
    print("style accuracy by backdrop:", json.dumps(by_backdrop), flush=True)
    state = {k: v.detach().half().contiguous() if v.is_floating_point() else v.contiguous() for k, v in judge.state_dict().items()}
    with atomic_path(args.out) as tmp:
        save_file(state, str(tmp), metadata={"accuracy": json.dumps(acc), "style_by_backdrop": json.dumps(by_backdrop),
                                                 "steps": str(step), "minutes": str(args.minutes)})
    print(f"wrote {args.out} ({args.out.stat().st_size / 2**20:.1f} MiB) after {step} steps", flush=True)


if __name__ == "__main__":
    main()
