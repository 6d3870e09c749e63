"""nada-client: ask a served generator for images by seed (seed0000.png, ...), or for your own photos
in its domain (--image: NAME.png each)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer

from nada_core.cli import run_app, typer_app
from nada_core.errors import FieldError
from nada_core.pngs import grid, read_image, read_rgb, save_png, write_seed_images
from nada_core.seeds import parse_seeds
from nada_serve.client import GeneratorClient, generate_seeds_async, wait_until_ready

app = typer_app(
    "Request images from a generator served by Triton over gRPC.\n\n"
    "Same seed convention as nada-generate (z = numpy RandomState(seed).randn(1, z_dim)), so the two give "
    "the same images.\n\n"
    "With --image: your photos in the model's domain, from its NAME_edit model (nada-export --encoder), as "
    "nada-edit draws them. Faces should be aligned first (nada-edit --align writes input.png aligned)."
)


@app.command()
def main(
    url: str = typer.Option("127.0.0.1:8001", help="Triton gRPC endpoint HOST:PORT."),
    model: str = typer.Option(
        ..., "--model", "-m", help="Served generator name (see the repository README)."
    ),
    seeds: str = typer.Option("0-7", help="Seeds, e.g. 0-3,7."),
    image: list[Path] = typer.Option(
        [],
        "--image",
        help="A photo to draw in the model's domain (repeatable): written as OUT/NAME.png; --seeds unused.",
    ),
    truncation: float = typer.Option(1.0, help="Truncation psi."),
    domain: str = typer.Option(
        None,
        help="A multi-domain model's domain (nada-export --domains): its name (a run folder's) or index.",
    ),
    out: Path = typer.Option(Path("out"), "--out", "-o", help="Output directory."),
    batch: int = typer.Option(0, help="Seeds per request (0 = the model's max batch)."),
    concurrency: int = typer.Option(4, help="Requests in flight."),
    grid_png: bool = typer.Option(False, "--grid", help="Also write grid.png."),
    wait: float = typer.Option(
        0, help="Seconds to wait for the server and the model to be ready (a server just started)."
    ),
    shared_memory: bool = typer.Option(
        False,
        "--shared-memory",
        help="On the server's own host: receive the images through system shared memory instead of the gRPC "
        "response (one request in flight; seeds only).",
    ),
) -> None:
    if image:
        stems = [p.stem for p in image]
        twice = next((s for s in stems if stems.count(s) > 1), None)
        if twice is not None:
            raise FieldError(f"{{images}}: two photos named '{twice}' would both be written as {twice}.png")
        for p in image:  # every file checked before the server is asked anything
            read_rgb(p)
        if wait > 0:
            wait_until_ready(url, model if model.endswith("_edit") else f"{model}_edit", wait)
        with GeneratorClient(url, model) as client:
            # as nada-edit reads them: the centre square, at the encoder's side
            images = client.edit([read_image(p, client.photo_side()) for p in image], domain)
        out.mkdir(parents=True, exist_ok=True)
        for path, picture in zip(image, images):
            save_png(picture, out / f"{path.stem}.png")
        if grid_png:
            save_png(grid(images, 1), out / "grid.png")
        print(f"wrote {len(images)} images to {out}")
        return
    seed_list = parse_seeds(seeds)
    if wait > 0:
        wait_until_ready(url, model, wait)
    if shared_memory:
        with GeneratorClient(url, model, shared_memory=True) as client:
            images = client.generate_seeds(seed_list, truncation, domain)
    else:
        images = asyncio.run(
            generate_seeds_async(url, model, seed_list, truncation, batch or None, concurrency, domain)
        )
    write_seed_images(images, seed_list, out, grid_png)
    print(f"wrote {len(images)} images to {out}")


def main_entry() -> None:
    run_app(app, "nada-client", {"images": "--image"})
