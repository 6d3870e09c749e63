"""Your own images in every domain (nada_train.edit, nada-edit): projected into the runs' base, drawn
by the base and by each run; runs of different bases, a changed base and bad images refused."""

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from nada_core.fileio import sha256_file
from nada_train.checkpoints import load_generator, save_safetensors
from nada_train.cli.edit import FLAGS
from nada_train.edit import edit
from nada_train.generator.inference import render
from tests.conftest import adapted_copy, refused, write_base_checkpoint
from tests.test_cli import run_in_process


def make_run(folder, base_path, adapted, base_sha=None):
    folder.mkdir(parents=True)
    save_safetensors(adapted, folder / "generator.safetensors")
    record = {"path": str(base_path), "sha256": base_sha or sha256_file(base_path), "kind": "rosinality"}
    (folder / "manifest.json").write_text(json.dumps({"base": record}))
    return folder


@pytest.fixture()
def world(tmp_path):
    """A base checkpoint and two runs adapted from it (as nada-train leaves them)."""
    base_path = write_base_checkpoint(tmp_path)
    g = load_generator(base_path).generator
    runs = [make_run(tmp_path / name, base_path, adapted_copy(g, i + 1)) for i, name in enumerate("ab")]
    return base_path, g, runs


def test_an_image_is_reconstructed_and_drawn_in_each_domain(world):
    base_path, g, runs = world
    image = render(g, [5], 0.6)[0]  # an image the base can make
    before = [load_generator(r).generator.noises.noise_0.clone() for r in runs]
    (edited,) = edit([image], runs, names=["me"], steps=30)
    assert edited.name == "me" and np.array_equal(edited.input, image) and set(edited.domains) == {"a", "b"}
    assert edited.ws.shape == (g.n_latent, g.config.style_dim)
    assert edited.psnr_db > 20
    # each domain is its run's generator drawing the same code: different weights, different images,
    # closer to the reconstruction than to each other's domain
    a, b, rec = (x.astype(int) for x in (edited.domains["a"], edited.domains["b"], edited.reconstruction))
    assert not np.array_equal(a, b) and not np.array_equal(a, rec)
    with torch.no_grad():
        ws = torch.from_numpy(edited.ws)[None]
        stored_noise = load_generator(runs[0]).synthesize(ws)[0].astype(int)
    # the domain image is drawn with the projection's noise maps, not the run's stored ones
    assert not np.array_equal(stored_noise, a) and np.abs(stored_noise - a).mean() < 40
    after = [load_generator(r).generator.noises.noise_0 for r in runs]
    assert all(torch.equal(x, y) for x, y in zip(before, after))


def test_runs_of_two_bases_and_a_changed_base_are_refused(world, tmp_path):
    base_path, g, runs = world
    other_base = write_base_checkpoint(tmp_path / "other")  # same network, written again: same file
    other_run = make_run(tmp_path / "c", other_base, adapted_copy(g, 3), base_sha="0" * 64)
    image = render(g, [1], 0.6)[0]
    with refused(
        r"^--run: adapted from different bases \(a, b from .*base\.pt; c from .*base\.pt\); an inversion",
        FLAGS,
    ):
        edit([image], [*runs, other_run], steps=1)
    with refused(r"^--run: the base '.*base\.pt' has changed since the runs were trained \(sha256 ", FLAGS):
        edit([image], [other_run], steps=1)


def test_nada_edit_writes_every_promised_file(world, tmp_path, monkeypatch, capsys):
    base_path, g, runs = world
    photo = tmp_path / "me.png"
    Image.fromarray(np.kron(render(g, [2], 0.6)[0], np.ones((2, 2, 1), np.uint8))).save(photo)  # 64 px
    out = tmp_path / "edits"
    args = [str(photo), "--run", str(runs[0]), "--run", str(runs[1]), "--out", str(out)]
    code, stdout, err = run_in_process(
        monkeypatch, capsys, "nada-edit", *args, "--steps", "3", "--grid", "--save-latents", "-q"
    )
    assert code == 0, err
    assert sorted(p.name for p in (out / "me").iterdir()) == [
        "a.png",
        "b.png",
        "grid.png",
        "input.png",
        "reconstruction.png",
    ]
    assert np.load(out / "me.npy").shape == (g.n_latent, g.config.style_dim)
    assert np.asarray(Image.open(out / "me" / "input.png")).shape == (32, 32, 3)  # the generator's size
    grid = np.asarray(Image.open(out / "me" / "grid.png"))
    assert grid.shape == (32, 4 * 32 + 3 * 2, 3)  # input | reconstruction | a | b
    assert re.search(
        r"^me: reconstruction PSNR [0-9.]+ dB \(projected by pixel L2 only\); 2 domains in ", stdout
    )
    not_an_image = tmp_path / "notes.txt"
    not_an_image.write_text("hello")
    code, _, err = run_in_process(monkeypatch, capsys, "nada-edit", str(not_an_image), *args[1:], "-q")
    assert code == 2 and err.strip().startswith(f"nada-edit: error: IMAGE '{not_an_image}': not an image")
    tiny = tmp_path / "tiny.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tiny)
    code, _, err = run_in_process(monkeypatch, capsys, "nada-edit", str(tiny), *args[1:], "-q")
    assert err.strip() == (
        f"nada-edit: error: IMAGE '{tiny}': 8 x 8 pixels is too small to invert; give at least 16 x 16"
    )


def test_photos_of_other_modes_are_converted_and_deep_ones_refused_in_one_line(tmp_path):
    """Greyscale, palette, RGBA and CMYK files come in as their RGB; 16-bit and float pixels, which
    8-bit RGB would clip, are refused naming the file and the fix."""
    from nada_core.errors import NadaError
    from nada_core.pngs import read_rgb

    rgb = np.random.RandomState(3).randint(0, 256, (20, 24, 3)).astype(np.uint8)
    picture = Image.fromarray(rgb)
    for mode in ("L", "P", "RGBA", "CMYK"):
        converted = picture.convert(mode)
        path = tmp_path / f"{mode}.{'jpg' if mode == 'CMYK' else 'png'}"
        converted.save(path, **({"quality": 100} if mode == "CMYK" else {}))
        got = read_rgb(path)
        assert got.shape == (20, 24, 3) and got.dtype == np.uint8
        if mode != "CMYK":  # lossless files: exactly PIL's own conversion
            np.testing.assert_array_equal(got, np.asarray(converted.convert("RGB")))
    deep = tmp_path / "deep.png"
    Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(deep)  # a 16-bit greyscale PNG
    assert Image.open(deep).mode.startswith("I")
    with pytest.raises(NadaError) as e:
        read_rgb(deep)
    assert str(e.value) == (
        f"images '{deep}': {Image.open(deep).mode} pixels (more than 8 bits a channel) would be clipped; save it "
        "as 8-bit RGB"
    )
