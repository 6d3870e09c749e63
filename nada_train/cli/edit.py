"""nada-edit: your own images in every domain of runs adapted from one base."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer

from nada_core.cli import run_app, typer_app
from nada_core.fileio import atomic_path
from nada_core.pngs import grid, save_png
from nada_train.checkpoints import load_generator
from nada_train.edit import edit, one_base, read_image
from nada_train.projection import ProjectionOptions

P = ProjectionOptions()
FLAGS = {"images": "IMAGE", "runs": "--run"}  # the library's field -> this command's argument
app = typer_app(
    "Draw your own images in the domains of nada-train runs: each image is projected into the runs' "
    "base (W or W+, by optimisation: any StyleGAN2/3 base, no encoder), then drawn by the base and by "
    "each run.\n\n"
    "Writes, per image NAME: OUT/NAME/input.png (the image at the generator's size), "
    "reconstruction.png (the base's), RUN.png for each run, grid.png with --grid (input | "
    "reconstruction | each run), and OUT/NAME.npy (its W+ code, [n_latent, w_dim]) with "
    "--save-latents.\n\n"
    "Example: nada-edit me.jpg --run runs/sketch --run runs/neon --out edits --grid"
)


@app.command()
def main(
    images: list[Path] = typer.Argument(..., help="Image files (PNG, JPEG, ...): the centre square is used."),
    run: list[str] = typer.Option(
        ..., "--run", help="A nada-train run directory; repeat it. One base for all."
    ),
    out: Path = typer.Option(Path("edits"), "--out", "-o", help="Output directory."),
    steps: int = typer.Option(P.steps, help="Projection steps (NVIDIA's projector takes 1000)."),
    space: str = typer.Option(
        P.space, help="w+ (one code per layer: closer reconstructions) or w (one code: the base's own space)."
    ),
    grid_png: bool = typer.Option(False, "--grid", help="Also write grid.png per image."),
    save_latents: bool = typer.Option(False, "--save-latents", help="Also write each image's W+ code."),
    seed: int = typer.Option(P.seed, help="Seed of the projection's noise."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    from tqdm import tqdm

    runs = [load_generator(r) for r in run]
    base = one_base(runs, run)  # refused before any image is read if the bases differ
    pictures = [read_image(p, base.config.image_shape[0]) for p in images]
    names = [p.stem for p in images]
    bar = tqdm(total=steps * len(pictures), desc="projecting", unit="step", disable=quiet)
    edited = edit(
        pictures,
        runs,
        names=names,
        base=base,
        steps=steps,
        space=space,
        seed=seed,
        callback=lambda step, loss: (bar.update(1), bar.set_postfix_str(f"loss {loss:.3f}")),
    )
    bar.close()
    for e in edited:
        folder = out / e.name
        folder.mkdir(parents=True, exist_ok=True)
        for file, image in [("input", e.input), ("reconstruction", e.reconstruction), *e.domains.items()]:
            save_png(image, folder / f"{file}.png")
        if grid_png:
            save_png(
                grid(np.stack([e.input, e.reconstruction, *e.domains.values()]), rows=1), folder / "grid.png"
            )
        if save_latents:
            with atomic_path(out / f"{e.name}.npy") as tmp, open(tmp, "wb") as f:
                np.save(f, e.ws)
        print(f"{e.name}: reconstruction PSNR {e.psnr_db:.1f} dB; {len(e.domains)} domains in {folder}")


def main_entry() -> None:
    run_app(app, "nada-edit", FLAGS)
