"""Train the judge: a CNN that names the style, shape and colour of a render. It decides the
adaptation metrics and is never used as a loss.

    python -m nada_world.train_judge --minutes 8 --threads 2

made the shipped weights on the 2-core CPU (1,705 steps; style 0.999 / shape 0.997 / colour 1.00 on
1000 fresh renders, extreme backdrops included).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import typer
from safetensors.torch import save_file

from nada_core.fileio import atomic_path
from nada_world.data import Pool, sample
from nada_world.evaluate import prediction_accuracy, style_accuracy_by_backdrop
from nada_world.models import JUDGE_WEIGHTS, Judge, augment
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

app = script_app(__doc__)


@app.command(help=__doc__)
def main(
    minutes: float = minutes_option(8),
    batch: int = typer.Option(64),
    lr: float = typer.Option(2e-3, help="Peak learning rate (cosine decay over the time budget)."),
    seed: int = typer.Option(1),
    threads: int = threads_option(),
    pool_size: int = typer.Option(8192, "--pool", help="Renders kept in memory (a share renewed each step)."),
    test_renders: int = typer.Option(1000, "--test", help="Fresh renders the accuracy is measured on."),
    out: Path = typer.Option(JUDGE_WEIGHTS, help="Weights file to write."),
) -> None:
    set_up(threads, seed)
    judge = Judge()
    opt = torch.optim.AdamW(judge.parameters(), lr=lr, weight_decay=1e-4)
    pool = Pool(pool_size, seed=seed, refresh=0.15)
    gen = torch.Generator().manual_seed(seed)
    budget = TimeBudget(minutes)
    judge.train()
    while budget.running():
        set_lr([opt], lr * cosine(budget.fraction))
        b = pool.draw(batch)
        out_ = judge(augment(b.images, gen))
        loss = (
            F.cross_entropy(out_["style"], b.style)
            + F.cross_entropy(out_["shape"], b.shape)
            + F.cross_entropy(out_["colour"], b.colour)
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if budget.step() % 50 == 0:
            print(f"step {budget.steps} {budget.elapsed:6.0f}s loss {loss.item():.3f}", flush=True)
    test = sample(test_renders, np.random.default_rng(20_000 + seed))
    predicted = judge.predict(test.images)
    acc = prediction_accuracy(
        (predicted["style"], predicted["shape"], predicted["colour"]), test.style, test.shape, test.colour
    )
    print(f"accuracy on {test_renders} fresh renders:", json.dumps(acc), flush=True)
    by_backdrop = style_accuracy_by_backdrop(predicted["style"], test.scenes)
    print("style accuracy by backdrop:", json.dumps(by_backdrop), flush=True)
    state = {
        k: v.detach().half().contiguous() if v.is_floating_point() else v.contiguous()
        for k, v in judge.state_dict().items()
    }
    with atomic_path(out) as tmp:
        save_file(
            state,
            str(tmp),
            metadata={
                "accuracy": json.dumps(acc),
                "style_by_backdrop": json.dumps(by_backdrop),
                "steps": str(budget.steps),
                "minutes": str(minutes),
            },
        )
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB) after {budget.steps} steps", flush=True)


if __name__ == "__main__":
    run_script(app, "nada_world.train_judge")
