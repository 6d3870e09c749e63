"""The world's training machinery: the adversarial images, the caption loss, the render streams and
pool, and how a world CLIP file names its architecture."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nada_core.errors import NadaError
from nada_world.data import DevicePool, RenderedBatches, from_scenes, render_stream
from nada_world.models import CLIP_NAME, caption, clip_model_name, scene_of_z
from nada_world.render import COLOURS, SHAPES, STYLES
from nada_world.train_clip import blend, blend_loss, caption_loss, combo_captions, pgd_l2, style_pairs
from nada_world.train_generator import LatentRenders, PatchCritic, critic_loss, object_weight


def test_pgd_on_a_linear_loss_lands_on_the_ball_along_the_gradient():
    """loss = <w_i, x_i>: the best image within L2 distance eps of x is x + eps w/|w|, per image."""
    w = torch.randn(3, 3, 8, 8)
    x = torch.zeros(3, 3, 8, 8)
    eps = 0.5  # per-pixel changes stay far inside [-1, 1]
    adv = pgd_l2(lambda im: (im * w).sum(), x, eps, steps=3)
    want = eps * w / w.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    assert torch.allclose(adv, want, atol=1e-6)
    assert torch.allclose((adv - x).flatten(1).norm(dim=1), torch.full((3,), eps), atol=1e-6)


def test_pgd_keeps_images_in_range():
    x = torch.full((2, 3, 4, 4), 0.99)
    adv = pgd_l2(lambda im: im.sum(), x, eps=3.0, steps=2)
    assert adv.max() <= 1 and (adv - x).flatten(1).norm(dim=1).max() <= 3.0 + 1e-5


class _Embedder(torch.nn.Module):
    """Images are their own embeddings (flattened): lets the loss be computed by hand."""

    def __init__(self, scale: float):
        super().__init__()
        self.logit_scale = torch.nn.Parameter(torch.tensor(math.log(scale)))

    def encode_image(self, images):
        return images.flatten(1)


def test_caption_loss_against_hand_computation():
    """Two images of one combo and one of another: each image's target spreads over the captions
    of its combo; symmetric=False is the image-to-text half alone."""
    model = _Embedder(10.0)
    images = F.normalize(torch.randn(3, 4), dim=1).view(3, 1, 2, 2)
    text = F.normalize(torch.randn(3, 4), dim=1)
    combo = torch.tensor([5, 5, 7])
    logits = 10.0 * images.flatten(1) @ text.T
    targets = torch.tensor([[0.5, 0.5, 0], [0.5, 0.5, 0], [0, 0, 1.0]])
    i2t = -(targets * logits.log_softmax(1)).sum(1).mean()
    t2i = -(targets * logits.T.log_softmax(1)).sum(1).mean()
    assert caption_loss(model, images, text, combo).item() == pytest.approx(
        ((i2t + t2i) / 2).item(), rel=1e-5
    )
    assert caption_loss(model, images, text, combo, symmetric=False).item() == pytest.approx(
        i2t.item(), rel=1e-5
    )
    # the first two images alone (as an attack on half a batch sees them)
    half = -(targets[:2] * logits[:2].log_softmax(1)).sum(1).mean()
    assert caption_loss(model, images[:2], text, combo, symmetric=False).item() == pytest.approx(
        half.item(), rel=1e-5
    )


def test_blend_loss_against_hand_computation():
    """A blend of combo 0 and combo 2 at alpha 0.25 wants 0.75 on caption 0 and 0.25 on caption 2;
    alpha 0 is the plain cross-entropy on the first combo."""
    model = _Embedder(10.0)
    a, b = (
        F.normalize(torch.randn(2, 4), dim=1).view(2, 1, 2, 2),
        F.normalize(torch.randn(2, 4), dim=1).view(2, 1, 2, 2),
    )
    prototypes = F.normalize(torch.randn(3, 4), dim=1)
    alpha = torch.tensor([0.25, 0.0])
    mixed = blend(a, b, alpha)
    assert torch.allclose(mixed[0], 0.75 * a[0] + 0.25 * b[0]) and torch.equal(mixed[1], a[1])
    logp = (10.0 * F.normalize(mixed.flatten(1), dim=1) @ prototypes.T).log_softmax(1)
    want = -(0.75 * logp[0, 0] + 0.25 * logp[0, 2] + logp[1, 1]) / 2
    got = blend_loss(model, mixed, torch.tensor([0, 1]), torch.tensor([2, 0]), alpha, prototypes)
    assert got.item() == pytest.approx(want.item(), rel=1e-5)


def test_style_pairs_share_the_scene_in_two_styles_and_captions_follow_combo_order():
    a, b = style_pairs(20, np.random.default_rng(0))
    for s, t in zip(a.scenes, b.scenes):
        assert s.style != t.style and s.to_dict() | {"style": 0} == t.to_dict() | {"style": 0}
    captions = combo_captions(template=1)
    assert len(captions) == len(STYLES) * len(SHAPES) * len(COLOURS) == len(set(captions))
    for combo, scene in zip(a.combo.tolist() + b.combo.tolist(), a.scenes + b.scenes):
        assert captions[combo] == caption(STYLES[scene.style], COLOURS[scene.colour], SHAPES[scene.shape], 1)


def test_render_stream_is_seeded_and_renders_what_it_labels():
    a = next(render_stream(RenderedBatches(6, seed=3), workers=0))
    b = next(render_stream(RenderedBatches(6, seed=3), workers=0))
    c = next(render_stream(RenderedBatches(6, seed=4), workers=0))
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)
    assert torch.equal(a.images, from_scenes(a.scenes).images)
    assert a.style.tolist() == [s.style for s in a.scenes]
    photo = next(render_stream(RenderedBatches(6, seed=3, style=0), workers=0))
    assert photo.style.tolist() == [0] * 6


def test_render_workers_draw_different_scenes():
    stream = render_stream(RenderedBatches(4, seed=1), workers=2)
    first, second = next(stream), next(stream)  # one from each worker
    assert not torch.equal(first.images, second.images)


def test_latent_renders_match_the_scene_of_their_latents():
    item = next(render_stream(LatentRenders(5, seed=0), workers=0))
    scenes = scene_of_z(item["z"])
    assert torch.equal(item["images"], from_scenes(scenes).images)
    assert torch.equal(item["weight"], object_weight(scenes))
    assert item["shape"].tolist() == [s.shape for s in scenes] and item["colour"].tolist() == [
        s.colour for s in scenes
    ]


def test_device_pool_swaps_the_oldest_chunk_in_ring_order():
    renders = render_stream(RenderedBatches(4, seed=0), workers=0)
    stream = (
        {"images": b.images, "combo": b.combo, "tokens": torch.tensor([[len(c)] for c in b.captions])}
        for b in renders
    )
    pool = DevicePool(stream, size=12, device=torch.device("cpu"))
    assert pool.data["images"].shape == (12, 3, 64, 64) and pool.chunk == 4 and pool.size == 12
    before = pool.data["images"].clone()
    pool.refresh()
    assert not torch.equal(pool.data["images"][:4], before[:4]) and torch.equal(
        pool.data["images"][4:], before[4:]
    )
    pool.refresh()
    pool.refresh()
    pool.refresh()  # 12 slots, 3 chunks: the fourth refresh writes slot 0-3 again
    assert pool.next == 4
    drawn = pool.draw(12, torch.Generator().manual_seed(0))
    order = [next(i for i in range(12) if torch.equal(pool.data["images"][i], im)) for im in drawn["images"]]
    assert sorted(order) == list(range(12))  # every example once, rows of one example kept together
    assert torch.equal(drawn["combo"], pool.data["combo"][order]) and torch.equal(
        drawn["tokens"], pool.data["tokens"][order]
    )


def test_world_clip_files_name_their_architecture(tmp_path):
    from safetensors.torch import save_file

    named, old = tmp_path / "named.safetensors", tmp_path / "old.safetensors"
    save_file({"x": torch.zeros(1)}, str(named), metadata={"model": "nada-world-clip-rn"})
    save_file({"x": torch.zeros(1)}, str(old))
    assert clip_model_name(named) == "nada-world-clip-rn"
    assert clip_model_name(old) == CLIP_NAME


def test_missing_clip_weights_file_is_a_clear_error(tmp_path):
    from nada_train.clip import ClipSpec, load_clip

    with pytest.raises(NadaError, match="weights file '.*none.safetensors' does not exist"):
        load_clip(ClipSpec("nada-world-clip-rn", str(tmp_path / "none.safetensors")))


def test_a_clip_of_your_own_loads_with_its_config_beside_the_weights(tmp_path):
    """An ordinary open_clip config plus weights file: the world's CLIP copied elsewhere under a new
    name loads through nada_train.clip with no special case."""
    import json
    import shutil

    from nada_train.clip import ClipSpec, load_clip
    from nada_world.models import ASSETS, CLIP_WEIGHTS, load_world_clip

    name = clip_model_name(CLIP_WEIGHTS)
    config = json.loads((ASSETS / f"{name}.json").read_text())
    (tmp_path / "my-own-clip.json").write_text(json.dumps(config))
    shutil.copy(CLIP_WEIGHTS, tmp_path / "weights.safetensors")
    mine = load_clip(ClipSpec("my-own-clip", str(tmp_path / "weights.safetensors")))
    shipped = load_world_clip()
    texts = ["a pixel art of a red star", "a photo of a blue circle"]
    assert torch.allclose(mine.encode_texts(texts), shipped.encode_texts(texts), atol=1e-6)


def test_prediction_accuracy_takes_tensors_and_arrays():
    from nada_world.evaluate import prediction_accuracy

    truth = torch.tensor([0, 1, 2, 3])
    got = prediction_accuracy(
        (torch.tensor([0, 1, 2, 0]), np.array([0, 0, 0, 0]), truth), truth, truth, truth
    )
    assert got == {"style": 0.75, "shape": 0.25, "colour": 1.0}


def test_critic_loss_is_the_logistic_loss_plus_r1_by_hand():
    """A critic linear in the image, D(x) = <w, x>: its gradient on every render is w, so the R1
    term is gamma/2 |w|^2, beside softplus(D(fake)) + softplus(-D(real))."""
    w = torch.randn(3, 64, 64) * 0.01
    critic = lambda x: (x * w).sum((1, 2, 3)).view(-1, 1, 1, 1)  # noqa: E731
    real, fake = torch.rand(2, 3, 64, 64) * 2 - 1, torch.rand(2, 3, 64, 64) * 2 - 1
    want = F.softplus(critic(fake)).mean() + F.softplus(-critic(real)).mean() + 0.5 * 0.1 * w.square().sum()
    assert torch.allclose(critic_loss(critic, real, fake, r1_gamma=0.1), want, rtol=1e-5)


def test_critic_loss_leaves_the_generator_alone_and_trains_the_critic():
    critic = PatchCritic(width=8)
    assert critic(torch.zeros(2, 3, 64, 64)).shape == (2, 1, 8, 8)
    g_param = torch.zeros(1, requires_grad=True)
    fake = torch.tanh(torch.randn(2, 3, 64, 64) + g_param)
    critic_loss(critic, torch.rand(2, 3, 64, 64), fake, r1_gamma=1.0).backward()
    assert g_param.grad is None  # the critic's step must not move the generator
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in critic.parameters())


def test_time_budget_on_a_fake_clock():
    from nada_world.script import TimeBudget, cosine

    now = [100.0]
    budget = TimeBudget(0.5, clock=lambda: now[0])  # 30 s
    seen = []
    while budget.running():
        seen.append(round(budget.fraction, 3))
        budget.step()
        now[0] += 10
    assert seen == [0.0, 0.333, 0.667] and budget.steps == 3 and budget.elapsed == 30
    assert (
        cosine(0) == 1
        and cosine(0.5) == pytest.approx(0.5)
        and cosine(1) == pytest.approx(0)
        and cosine(2) == pytest.approx(0)
    )


def test_train_judge_script_writes_a_loadable_judge(tmp_path):
    """The script end to end, for a second: its options through typer, its file through load_judge."""
    import subprocess
    import sys

    from safetensors import safe_open

    from nada_world.models import load_judge

    out = tmp_path / "judge.safetensors"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "nada_world.train_judge",
            "--minutes",
            "0.01",
            "--threads",
            "1",
            "--pool",
            "64",
            "--test",
            "40",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert "accuracy on 40 fresh renders" in r.stdout
    with safe_open(str(out), "pt") as f:
        meta = f.metadata()
    assert int(meta["steps"]) >= 1 and set(json.loads(meta["accuracy"])) == {"style", "shape", "colour"}
    judge = load_judge(out)
    assert judge.predict(torch.zeros(2, 3, 64, 64))["style"].shape == (2,)
