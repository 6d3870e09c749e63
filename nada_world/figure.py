"""The README's before/after figure: the built-in generator's row, then one adapted row per run, on
the same seeds; or, with --generators, the scenes the latents stand for, rendered, above each
generator's samples of them.

    python -m nada_world.figure runs/sketch runs/neon runs/pixel --out docs/world-default.png
    python -m nada_world.figure --generators old.safetensors new.safetensors --out docs/world-generators.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from nada_core.pngs import grid, save_png
from nada_core.seeds import parse_seeds, z_batch
from nada_train.checkpoints import load_generator
from nada_train.images import to_uint8
from nada_world.data import from_scenes
from nada_world.models import GENERATOR_WEIGHTS, Z_DIM, scene_of_z


@torch.no_grad()
def before_after(runs: list[Path], seeds: list[int], scale: int = 2) -> np.ndarray:
    """[H, W, 3] uint8: row 0 the frozen generator, row i the i-th run's adapted generator."""
    sources = [GENERATOR_WEIGHTS, *runs]
    rows = []
    for source in sources:
        g = load_generator(source, "cpu").generator.eval()
        z = torch.from_numpy(z_batch(seeds, g.config.z_dim))
        rows.append(to_uint8(g(z)))
    mosaic = grid(torch.cat(rows).cpu().numpy(), rows=len(sources))
    return mosaic.repeat(scale, 0).repeat(scale, 1)


@torch.no_grad()
def intended_and_drawn(generators: list[Path], seeds: list[int], scale: int = 2) -> np.ndarray:
    """[H, W, 3] uint8: row 0 the render of scene_of_z for each seed, row i the i-th generator's sample."""
    z = torch.from_numpy(z_batch(seeds, Z_DIM))
    rows = [to_uint8(from_scenes(scene_of_z(z)).images)]
    rows += [to_uint8(load_generator(path, "cpu").generator.eval()(z)) for path in generators]
    mosaic = grid(torch.cat(rows).cpu().numpy(), rows=len(rows))
    return mosaic.repeat(scale, 0).repeat(scale, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="*", type=Path, help="nada-train run directories on the built-in generator")
    ap.add_argument(
        "--generators",
        nargs="+",
        type=Path,
        help="generator files: show their samples under the intended scenes instead",
    )
    ap.add_argument("--seeds", default="0-11")
    ap.add_argument(
        "--scale", type=int, default=2, help="nearest-neighbour upscaling, so 64-px images are visible"
    )
    ap.add_argument("--out", type=Path, default=Path("docs/world-default.png"))
    args = ap.parse_args()
    if bool(args.runs) == bool(args.generators):
        ap.error("give run directories or --generators FILES, one of the two")
    seeds = parse_seeds(args.seeds)
    image = (
        intended_and_drawn(args.generators, seeds, args.scale)
        if args.generators
        else before_after(args.runs, seeds, args.scale)
    )
    save_png(image, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
