"""nada-edit: your own images in every domain of runs adapted from one base."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer

from nada_core.cli import run_app, typer_app
from nada_core.fileio import atomic_path
from nada_core.pngs import grid, save_png
from nada_train.alignment import read_photos
from nada_train.checkpoints import load_generator
from nada_train.edit import edit, one_base
from nada_train.perceptual import load_lpips
from nada_train.projection import ProjectionOptions

P = ProjectionOptions()
FLAGS = {
    "images": "IMAGE",
    "runs": "--run",
    "encoder": "--encoder",
}  # the library's field -> this command's argument
app = typer_app(
    "Draw your own images in the domains of nada-train runs: each image is inverted into the runs' "
    "base, by --encoder (a pSp, e4e or ReStyle checkpoint whose decoder the runs adapted: nada-train "
    "--generator E.pt) or else projected (W or W+, by optimisation: any StyleGAN2/3 base), then drawn "
    "by the base and by each run.\n\n"
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
    encoder: Path = typer.Option(
        None,
        "--encoder",
        help="A pSp/e4e/ReStyle .pt whose decoder is the runs' base (read as data), a nada encoder "
        "(.safetensors), or builtin:world for the built-in world's runs.",
    ),
    encoder_steps: int = typer.Option(None, help="ReStyle's refinement steps (default 5)."),
    align: bool = typer.Option(
        False, "--align", help="FFHQ-align each face first (as the face encoders expect): dlib finds it."
    ),
    shape_predictor: Path = typer.Option(
        None, "--shape-predictor", help="With --align: dlib's shape_predictor_68_face_landmarks.dat."
    ),
    landmarks: list[Path] = typer.Option(
        None, "--landmarks", help="Align by these 68 x 2 landmarks (.npy, one per image, any detector's)."
    ),
    steps: int = typer.Option(P.steps, help="Projection steps (NVIDIA's projector takes 1000)."),
    space: str = typer.Option(
        P.space, help="w+ (one code per layer: closer reconstructions) or w (one code: the base's own space)."
    ),
    grid_png: bool = typer.Option(False, "--grid", help="Also write grid.png per image."),
    save_latents: bool = typer.Option(False, "--save-latents", help="Also write each image's W+ code."),
    seed: int = typer.Option(P.seed, help="Seed of the projection's noise."),
    lpips: Path = typer.Option(
        None,
        "--lpips",
        help="LPIPS-VGG16 weights in the lpips package's layout (torch.save(lpips.LPIPS(net='vgg')"
        ".state_dict(), FILE)): the projection's perceptual distance, as NVIDIA's projector. Else pixel L2.",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    from tqdm import tqdm

    from nada_train.edit import check_encoder_base
    from nada_train.encoders.loading import INPUT_SIZE, load_encoder

    runs = [load_generator(r) for r in run]
    loaded = load_encoder(encoder, runs[0].device) if encoder is not None and runs else None
    # refused before any image is read if the bases differ; an encoder's decoder is not read twice
    base = one_base(runs, run, loaded.generator if loaded is not None else None)
    names = [p.stem for p in images]
    if loaded is not None:
        check_encoder_base(loaded, base)
        pictures = read_photos(images, INPUT_SIZE, align, shape_predictor, landmarks)  # the encoder's size
        edited = edit(pictures, runs, names=names, base=base, encoder=loaded, encoder_steps=encoder_steps)
    else:
        pictures = read_photos(images, base.config.image_shape[0], align, shape_predictor, landmarks)
        bar = tqdm(total=steps * len(pictures), desc="projecting", unit="step", disable=quiet)
        edited = edit(
            pictures,
            runs,
            names=names,
            base=base,
            steps=steps,
            space=space,
            seed=seed,
            lpips=load_lpips(lpips) if lpips is not None else None,
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
        print(
            f"{e.name}: reconstruction PSNR {e.psnr_db:.1f} dB ({e.inverted_by}); {len(e.domains)} domains "
            f"in {folder}"
        )


def main_entry() -> None:
    run_app(app, "nada-edit", FLAGS)
