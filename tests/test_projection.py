"""Optimisation-based projection (nada_train.projection): the loss falls, the reconstruction comes
closer than the average image, for StyleGAN2 and StyleGAN3 bases, and the generator is left as it was."""

import numpy as np
import pytest
import torch

from nada_train.generator.inference import render
from nada_train.projection import learning_rate, noise_penalty, project
from tests.conftest import refused, tiny_generator
from tests.test_stylegan3 import sg3


def average_image_psnr(g, target: np.ndarray) -> float:
    from nada_train.images import psnr, to_uint8

    with torch.no_grad():
        w_avg = g.mapping(
            torch.randn(10_000, g.config.z_dim, generator=torch.Generator().manual_seed(0))
        ).mean(0)
        image = to_uint8(g.synthesis(g.broadcast(w_avg[None]))).numpy()[0]
    return psnr(image, target, 255.0)


@pytest.mark.parametrize("space", ["w", "w+"])
def test_projection_finds_a_code_closer_than_the_average_and_leaves_the_generator(space):
    g = tiny_generator()
    before = {k: v.clone() for k, v in g.state_dict().items()}
    target = render(g, [3, 7], 0.6)  # images the generator can make
    steps = []
    found = project(g, target, steps=30, space=space, callback=lambda s, loss: steps.append(s))
    assert steps == list(range(1, 31)) and len(found.losses) == 30
    assert np.mean(found.losses[-5:]) < 0.5 * np.mean(found.losses[:5])
    assert found.ws.shape == (2, g.n_latent, g.config.style_dim) and found.images.shape == target.shape
    if space == "w":  # one code for every layer
        assert torch.equal(found.ws[:, 0], found.ws[:, -1])
    baseline = [average_image_psnr(g, t) for t in target]
    assert all(p > b + 3 for p, b in zip(found.psnr_db, baseline)), (found.psnr_db, baseline)
    assert found.distance == "pixel L2 only" and set(found.noise) == {k for k, _ in g.noises.named_buffers()}
    after = g.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # noise buffers included


def test_a_stylegan3_base_is_projected_too():
    g = sg3()
    target = render(g, [1], 0.5)
    found = project(g, target, steps=5, space="w+", w_avg_samples=200)
    # a StyleGAN3 step costs twenty of the tiny StyleGAN2's here: five steps show the descent
    assert found.losses[-1] < found.losses[0] and found.noise == {} and found.images.shape == target.shape


def test_a_perceptual_model_joins_the_distance_and_is_named():
    g = tiny_generator()
    target = render(g, [2], 0.6)
    calls = []

    def embed(images):  # a stand-in embedding: normalised pooled pixels, differentiable
        calls.append(images.requires_grad)
        return torch.nn.functional.normalize(torch.nn.functional.avg_pool2d(images, 8).flatten(1), dim=-1)

    found = project(g, target, steps=5, perceptual=embed, perceptual_name="pooled")
    assert found.distance == "pooled" and calls[0] is False and calls[1:] == [True] * 5


def test_the_schedule_and_the_noise_penalty():
    assert learning_rate(0.0, 0.1) == 0.0 and learning_rate(0.5, 0.1) == pytest.approx(0.1)
    assert learning_rate(0.025, 0.1) == pytest.approx(0.05) and learning_rate(0.999, 0.1) < 1e-4
    smooth = torch.ones(1, 1, 16, 16)
    white = torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    assert float(noise_penalty([smooth])) == pytest.approx(4.0)  # (1 at each shift)^2, two scales x two axes
    assert float(noise_penalty([white])) < 0.05


def test_bad_images_and_options_are_one_line():
    g = tiny_generator()
    with refused(r"--images: want uint8 RGB images \[N, H, W, 3\], got float32 \[32, 32\]"):
        project(g, np.zeros((32, 32), np.float32))
    with refused("--space z: choose w or w\\+"):
        project(g, np.zeros((1, 32, 32, 3), np.uint8), space="z")
    with refused("--steps 0: must be at least 1"):
        project(g, np.zeros((1, 32, 32, 3), np.uint8), steps=0)
    with refused("--iterations: not an option of a projection; the options are code_noise, lr, "):
        project(g, np.zeros((1, 32, 32, 3), np.uint8), iterations=3)


def test_an_lpips_projection_says_so_and_the_distance_drives_it():
    """With LPIPS (the fixtures' weights) the loss is pixel L2 plus LPIPS, and the projection names it."""
    from tests.test_perceptual import fixture_lpips

    g, lpips = tiny_generator(), fixture_lpips()
    target = render(g, [3], 0.6)
    plain = project(g, target, steps=4)
    found = project(g, target, steps=4, lpips=lpips)
    assert found.distance == "LPIPS (VGG16) and pixel L2"
    # the same first render (w_avg, the seed's noise): the losses differ by LPIPS alone, then fall
    assert found.losses[0] != plain.losses[0] and found.losses[-1] < found.losses[0]


def test_a_fresh_world_render_is_projected_to_a_close_reconstruction():
    """A photo render the world's generator never drew (a new scene): 40 steps of W+ projection reach
    22 dB here and the loss falls a hundredfold (1000 steps: 34.6-38.5 dB on four such renders, the
    judge's shape and colour kept on all four: docs/editing.md)."""
    from nada_train.checkpoints import load_generator
    from nada_train.images import to_uint8
    from nada_world.render import STYLES, random_scene, render_batch

    scene = random_scene(np.random.default_rng(123), style=STYLES.index("photo"))
    target = to_uint8(torch.from_numpy(render_batch([scene]))).numpy()  # the renders as images
    found = project(load_generator("builtin:world"), target, steps=40, w_avg_samples=2000)
    assert found.psnr_db[0] > 21 and found.losses[-1] < 0.01 * found.losses[0]
