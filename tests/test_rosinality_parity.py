"""nada's generator against an independent implementation: rosinality's stylegan2-pytorch, run on
small random-weight generators with unusual widths (tests/data/rosinality, made by its script)."""

from pathlib import Path

import numpy as np
import pytest
import torch

from nada_core.seeds import z_batch
from nada_train.checkpoints import load_generator
from nada_train.generator.inference import render
from nada_train.images import to_uint8

DATA = Path(__file__).parent / "data" / "rosinality"
NAMES = ["g32_w20", "g64_w16"]
TRUNCATIONS = {"t100": 1.0, "t070": 0.7}


def fixture(name):
    return load_generator(DATA / f"{name}.pt").generator, np.load(DATA / f"{name}.npz")


@pytest.mark.parametrize("name", NAMES)
def test_fixture_exercises_the_pixel_range(name):
    _, ref = fixture(name)
    u = ref["uint8_t100"]
    # not saturated: errors would show
    assert np.mean((u == 0) | (u == 255)) < 0.1 and len(np.unique(u)) > 200


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("truncation", list(TRUNCATIONS))
@pytest.mark.parametrize("name", NAMES)
def test_images_and_ws_match_rosinality(name, truncation, fused):
    g, ref = fixture(name)
    seeds = [int(s) for s in ref["seeds"]]
    psi = TRUNCATIONS[truncation]
    if fused:  # the trainer's grouped form
        with torch.no_grad():
            z = torch.from_numpy(z_batch(seeds, g.config.z_dim))
            images = to_uint8(g.synthesis(g.ws(z, psi), fused=True)).numpy()
    else:
        images = render(g, seeds, psi)  # what nada-generate writes
    diff = np.abs(images.astype(int) - ref[f"uint8_{truncation}"].astype(int))
    assert diff.max() <= 1, (name, truncation, int(diff.max()))
    with torch.no_grad():
        w = g.mapping(torch.from_numpy(ref["z"]))
        ws = g.broadcast(g.truncate(w, psi) if psi != 1 else w)
    np.testing.assert_allclose(ws.numpy(), ref[f"ws_{truncation}"], rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_style_mixing_matches_rosinality(name):
    g, ref = fixture(name)
    with torch.no_grad():
        w = g.mapping(torch.from_numpy(ref["z"][:2]))
        ws = g.mix(w[:1], w[1:], int(ref["mix_index"]))
        img = to_uint8(g.synthesis(ws)).numpy()
    np.testing.assert_allclose(ws.numpy(), ref["mix_ws"], rtol=0, atol=1e-5)
    assert np.abs(img.astype(int) - ref["mix_uint8"].astype(int)).max() <= 1
