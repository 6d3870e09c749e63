import json
from pathlib import Path

import numpy as np
import pytest
import torch

from nada_core.errors import NadaError
from nada_train.clip import load_clip, parse_clip_spec
from nada_train.clip.templates import imagenet_templates
from nada_train.losses import anchor_loss, directional_loss, global_loss, image_direction, text_direction
from tests.conftest import refused


def unit(v):
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_directional_loss_matches_hand_computation():
    rng = np.random.default_rng(0)
    frozen, train = unit(rng.normal(size=(4, 8))), unit(rng.normal(size=(4, 8)))
    direction = unit(rng.normal(size=8))
    want = np.mean([1 - unit(t - f) @ direction for f, t in zip(frozen, train)])
    got = directional_loss(torch.tensor(frozen), torch.tensor(train), torch.tensor(direction))
    assert float(got) == pytest.approx(want, rel=1e-6)


def test_directional_loss_finite_with_gradient_at_step_zero():
    e = torch.nn.functional.normalize(torch.randn(2, 8), dim=-1)
    train = e.clone().requires_grad_(True)
    direction = torch.nn.functional.normalize(torch.randn(8), dim=0)
    loss = directional_loss(e, train, direction)
    loss.backward()
    assert float(loss) == pytest.approx(1.0)
    assert torch.isfinite(train.grad).all()
    # the gradient pushes the step along the direction
    assert float((-train.grad[0]) @ direction) > 0


def test_global_loss():
    e = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1)
    t = torch.randn(8)
    want = np.mean(1 - e.numpy() @ (t.numpy() / np.linalg.norm(t.numpy())))
    assert float(global_loss(e, t)) == pytest.approx(want, rel=1e-5)


def test_anchor_loss_compares_block_means_and_leaves_what_is_inside_a_block_free():
    """At 64 px the anchor is the mean squared difference of the 4x4-block means (16x16 of them); a
    change that keeps every block's mean (a stroke pattern inside the blocks) costs nothing, one that
    moves colour between blocks does."""
    gen = torch.Generator().manual_seed(0)
    frozen, train = (torch.rand(2, 3, 64, 64, generator=gen) * 2 - 1 for _ in range(2))
    blocks = lambda x: x.numpy().reshape(2, 3, 16, 4, 16, 4).mean(axis=(3, 5))  # noqa: E731
    want = np.mean((blocks(train) - blocks(frozen)) ** 2)
    assert float(anchor_loss(frozen, train)) == pytest.approx(want, rel=1e-5)
    inside = torch.tensor([[1.0, -1.0], [-1.0, 1.0]]).repeat(32, 32) * 0.5  # mean 0 in each 4x4 block
    assert float(anchor_loss(frozen, frozen + inside)) < 1e-12
    moved = torch.zeros(64, 64)
    moved[:, :32] = 0.5  # left half brighter: a change of layout and colour, not of texture
    assert float(anchor_loss(frozen, frozen + moved)) == pytest.approx(0.125, rel=1e-5)
    small = torch.rand(1, 3, 8, 8, generator=gen)  # smaller than 16 px: compared as it is
    assert float(anchor_loss(small, small + 0.1)) == pytest.approx(0.01, rel=1e-4)
    with pytest.raises(AssertionError):
        anchor_loss(frozen, train[:1])


def test_guide_adds_the_weighted_global_loss(tiny_clip_spec):
    """ClipGuide.directional with global_weight w = directional + w * global, from the embeddings of
    the same images and the cached target text."""
    from nada_train.losses import ClipGuide

    clip = load_clip(parse_clip_spec(tiny_clip_spec))
    guide = ClipGuide([clip])
    guide.set_text_target("photo", "sketch", ["a {}.", "art of a {}."])
    gen = torch.Generator().manual_seed(0)
    frozen, train = (
        torch.rand(2, 3, 32, 32, generator=gen) * 2 - 1,
        torch.rand(2, 3, 32, 32, generator=gen) * 2 - 1,
    )
    f, t = clip.encode_images(frozen).detach(), clip.encode_images(train).detach()
    target = torch.nn.functional.normalize(clip.encode_texts(["a sketch.", "art of a sketch."]), dim=-1).mean(
        0
    )
    plain, _ = guide.directional(frozen, train)
    both, _ = guide.directional(frozen, train, global_weight=0.5)
    assert float(plain) == pytest.approx(float(directional_loss(f, t, guide.directions[0])), rel=1e-5)
    assert float(both) == pytest.approx(float(plain) + 0.5 * float(global_loss(t, target)), rel=1e-5)


# sha256 of json.dumps(imagenet_templates) as the reference defines it, list and order: computed from
# rinongal/StyleGAN-nada at dc8406a, ZSSGAN/utils/text_templates.py, run in a scratch folder
REFERENCE_TEMPLATES_SHA256 = "c4c6886214105dedaf1e824702383f359986458bcab67b3007fcef4db4dd504a"


def test_templates_are_the_reference_79():
    """Every template, in the reference's order (the text direction is their mean, so a template
    missing, added or changed moves it)."""
    import hashlib

    t = imagenet_templates()
    assert len(t) == 79 and "a photo of many {}." not in t
    assert hashlib.sha256(json.dumps(t).encode()).hexdigest() == REFERENCE_TEMPLATES_SHA256


def test_text_direction_matches_hand_computation(tiny_clip_spec):
    clip = load_clip(parse_clip_spec(tiny_clip_spec))
    templates = ["a {}.", "a photo of the {}.", "art of a {}."]
    src = clip.encode_texts([t.format("photo") for t in templates]).numpy()
    tgt = clip.encode_texts([t.format("sketch") for t in templates]).numpy()
    want = unit((unit(tgt) - unit(src)).mean(0))
    got = text_direction(clip, "photo", "sketch", templates).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_a_text_target_encodes_each_text_once_per_clip(tiny_clip_spec):
    """set_text_target: the direction is text_direction's and the global target the mean of the
    target's template embeddings, with the source and the target each through the CLIP once (the
    target's 79 texts were encoded twice: a third of the start-up on ViT-B-32 on a CPU)."""
    from nada_train.losses import ClipGuide

    clip = load_clip(parse_clip_spec(tiny_clip_spec))
    templates = ["a {}.", "a photo of the {}.", "art of a {}."]
    want_direction = text_direction(clip, "photo", "sketch", templates)
    want_target = unit(clip.encode_texts([t.format("sketch") for t in templates]).numpy().mean(0))
    seen, encode = [], clip.encode_texts
    clip.encode_texts = lambda texts: seen.append(texts) or encode(texts)
    guide = ClipGuide([clip])
    guide.set_text_target("photo", "sketch", templates)
    assert sorted(seen) == [[t.format(w) for t in templates] for w in ("photo", "sketch")]
    assert torch.equal(guide.directions[0], want_direction)
    np.testing.assert_allclose(guide.target_texts[0].numpy(), want_target, atol=1e-6)


def test_image_direction():
    a, b = torch.randn(5, 8), torch.randn(3, 8)
    want = unit(b.numpy().mean(0) - a.numpy().mean(0))
    np.testing.assert_allclose(image_direction(a, b).numpy(), want, atol=1e-6)


def test_clip_preprocess_is_differentiable_and_sized(tiny_clip_spec):
    clip = load_clip(parse_clip_spec(tiny_clip_spec))
    x = torch.zeros(2, 3, 64, 48, requires_grad=True)
    y = clip.preprocess(x)
    assert y.shape == (2, 3, 32, 32)
    # [-1,1] zero -> 0.5, then normalised by CLIP's mean/std
    assert torch.allclose(y[0, :, 5, 5], (0.5 - clip.mean.flatten()) / clip.std.flatten(), atol=1e-5)
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "spec,match",
    [
        ("ViT-B/32", "unknown CLIP model"),
        ("ViT-B-32:not-a-tag", "unknown pretrained tag"),
        ("ViT-B-32:/nope/weights.pt", "does not exist"),
    ],
)
def test_bad_clip_specs(spec, match):
    with pytest.raises(NadaError, match=match):
        load_clip(parse_clip_spec(spec))


def test_global_of_the_guide_is_the_weighted_sum_over_models(tiny_clip_spec):
    from nada_train.losses import ClipGuide

    clips = [load_clip(parse_clip_spec(tiny_clip_spec, weight)) for weight in (0.5, 2.0)]
    guide = ClipGuide(clips)
    guide.set_text_target("photo", "sketch", ["a {}.", "art of a {}."])
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3)) * 2 - 1
    want = sum(
        c.spec.weight * float(global_loss(c.encode_images(images), t))
        for c, t in zip(clips, guide.target_texts)
    )
    assert float(guide.global_(images)) == pytest.approx(want, rel=1e-6)


def test_two_weighted_clips_add_their_directional_losses(tiny_clip_spec):
    """Two different CLIPs weighted 0.5 and 2: each model's loss uses its own direction and target
    text (its own embedding space), the parts are each model's loss, the total their weighted sum."""
    from nada_train.losses import ClipGuide
    from tests.conftest import OTHER_CLIP_NAME

    clips = [
        load_clip(parse_clip_spec(tiny_clip_spec, 0.5)),
        load_clip(parse_clip_spec(f"{OTHER_CLIP_NAME}:random", 2.0)),
    ]
    templates = ["a {}.", "art of a {}."]
    guide = ClipGuide(clips)
    guide.set_text_target("photo", "sketch", templates)
    gen = torch.Generator().manual_seed(4)
    frozen, train = (torch.rand(3, 3, 32, 32, generator=gen) * 2 - 1 for _ in range(2))
    total, parts = guide.directional(frozen, train, global_weight=0.3)
    each = {}
    for clip in clips:
        direction = text_direction(clip, "photo", "sketch", templates)
        target = torch.nn.functional.normalize(
            clip.encode_texts([t.format("sketch") for t in templates]).mean(0), dim=-1
        )
        f, t = clip.encode_images(frozen), clip.encode_images(train)
        each[str(clip.spec)] = float(directional_loss(f, t, direction) + 0.3 * global_loss(t, target))
    assert list(parts) == [f"{tiny_clip_spec}", f"{OTHER_CLIP_NAME}:random"]
    assert parts == pytest.approx(each, rel=1e-5)
    assert float(total) == pytest.approx(
        0.5 * each[tiny_clip_spec] + 2.0 * each[f"{OTHER_CLIP_NAME}:random"], rel=1e-5
    )
    # two models that really differ
    assert abs(each[tiny_clip_spec] - each[f"{OTHER_CLIP_NAME}:random"]) > 1e-3


def test_targets_trained_together_encode_the_frozen_images_once_per_clip(tiny_clip_spec):
    """Two targets sharing a FrozenMemo and two CLIPs (as nada_train.many trains them): each CLIP
    encodes the step's frozen images once for both targets, and each target's losses are the ones
    it gets alone (each CLIP its own embedding of them)."""
    from nada_train.losses import ClipGuide
    from nada_train.trainer import FrozenMemo
    from tests.conftest import OTHER_CLIP_NAME

    clips = [
        load_clip(parse_clip_spec(tiny_clip_spec, 0.5)),
        load_clip(parse_clip_spec(f"{OTHER_CLIP_NAME}:random", 2.0)),
    ]
    gen = torch.Generator().manual_seed(5)
    ws, frozen = torch.randn(3, 4), torch.rand(3, 3, 32, 32, generator=gen) * 2 - 1
    trained = {t: torch.rand(3, 3, 32, 32, generator=gen) * 2 - 1 for t in ("sketch", "neon")}
    memo, calls = FrozenMemo(), []
    memo_images = memo.synthesis(lambda _: frozen, ws)

    def counted(encode, i):
        def run(images):
            calls.append((i, images is memo_images))
            return encode(images)

        return run

    for target in ("sketch", "neon"):
        together, alone = ClipGuide(clips, frozen_memo=memo), ClipGuide(clips)
        for guide in (together, alone):
            guide.set_text_target("photo", target, ["a {}."])
        together.encoders = [counted(e, i) for i, e in enumerate(together.encoders)]
        got, want = (
            together.directional(memo_images, trained[target], 0.3),
            alone.directional(frozen, trained[target], 0.3),
        )
        assert got[1] == pytest.approx(want[1], rel=1e-6) and float(got[0]) == pytest.approx(
            float(want[0]), rel=1e-6
        )
    assert sorted(c for c in calls if c[1]) == [(0, True), (1, True)]  # the frozen images: once per CLIP
    assert len(calls) == 2 + 4  # and each target's trained images by each CLIP


def test_offline_without_cached_weights_is_one_line_saying_where_it_looked(tmp_path, monkeypatch):
    """A pretrained tag whose weights are in no cache, with the hub out of reach: the whole message,
    naming the Hugging Face cache it looked in and what to pass instead."""
    import huggingface_hub.constants as hub

    from nada_train.clip import ClipSpec

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.cache/clip either
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(cache))
    with pytest.raises(NadaError) as info:
        load_clip(ClipSpec("ViT-B-32", "openai"))
    assert info.value.for_command_line() == (
        "--clip ViT-B-32:openai: weights are not cached on this machine and the model hub cannot be reached; "
        f"open_clip looks in the Hugging Face cache ({cache}) and ~/.cache/clip; pass a local file as --clip "
        "NAME:/path/to/weights.pt, or NAME:random for a smoke test"
    )


def test_style_images_keep_their_proportions(tmp_path):
    """A wide image is resized on its short side and cropped in the middle (not squashed): a 512x256
    picture whose middle half is red on the left, blue on the right, becomes exactly that half."""
    from PIL import Image

    from nada_train.losses import load_style_images

    wide = np.zeros((256, 512, 3), np.uint8)
    wide[:, :128] = (0, 255, 0)  # cropped away
    wide[:, 128:256] = (255, 0, 0)
    wide[:, 256:384] = (0, 0, 255)
    wide[:, 384:] = (0, 255, 0)  # cropped away
    Image.fromarray(wide).save(tmp_path / "wide.png")
    Image.fromarray(np.full((300, 300, 3), 255, np.uint8)).save(tmp_path / "white.jpg")
    x = load_style_images(tmp_path)  # sorted by name: white.jpg, wide.png
    assert x.shape == (2, 3, 256, 256) and x.dtype == torch.float32
    assert torch.equal(x[0], torch.ones(3, 256, 256))  # 255 -> 1 exactly
    red, blue = torch.tensor([1.0, -1.0, -1.0]), torch.tensor([-1.0, -1.0, 1.0])
    assert torch.equal(x[1][:, 5, :120], red[:, None].expand(3, 120))
    assert torch.equal(x[1][:, 250, 136:], blue[:, None].expand(3, 120))
    assert x[1][1].max() < -0.9  # no green: the outer quarters are gone


@pytest.mark.parametrize(
    "setup,match",
    [
        (lambda d: None, "not a directory"),
        (lambda d: d.mkdir(), "no .png, .jpg or .jpeg files"),
        (lambda d: (d.mkdir(), (d / "broken.png").write_bytes(b"not a png")), "cannot read '.*broken.png'"),
    ],
)
def test_style_image_folder_errors(tmp_path, setup, match):
    from nada_train.losses import load_style_images

    folder = tmp_path / "styles"
    setup(folder)
    with refused(f"--target-images.*{match}"):
        load_style_images(folder)


def hub_cache_with(tmp_path, repo: str, state: dict) -> Path:
    """A Hugging Face cache holding `state` as open_clip_model.safetensors of `repo`, as the hub lays it out."""
    from safetensors.torch import save_file

    root = tmp_path / "hub" / f"models--{repo.replace('/', '--')}"
    (root / "snapshots" / "0123abcd").mkdir(parents=True)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text("0123abcd")
    save_file(
        {k: v.contiguous() for k, v in state.items()},
        str(root / "snapshots" / "0123abcd" / "open_clip_model.safetensors"),
    )
    return tmp_path / "hub"


def test_a_quick_gelu_tag_builds_the_network_its_weights_were_trained_as(
    tmp_path, monkeypatch, clip_config_dir
):
    """A tag whose config says quick_gelu (as open_clip's 'openai' tags do) loads into a QuickGELU
    network, offline, from the hub cache; open_clip alone would build plain GELU for it."""
    import huggingface_hub.constants as hub

    from nada_train.clip import ClipSpec
    from nada_train.clip.compat import import_open_clip
    from tests.conftest import TINY_CLIP_NAME

    open_clip = import_open_clip()  # before open_clip.pretrained: torchvision needs the compat step
    registry = open_clip.pretrained
    open_clip.add_model_config(clip_config_dir)
    trained = open_clip.create_model(TINY_CLIP_NAME, pretrained=None, force_quick_gelu=True).eval()
    cache = hub_cache_with(tmp_path, "nada-test/tiny-clip.openai", trained.state_dict())
    monkeypatch.setitem(
        registry._PRETRAINED,
        TINY_CLIP_NAME,
        {"openai": registry._pcfg(hf_hub="nada-test/tiny-clip.openai/", quick_gelu=True)},
    )
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    clip = load_clip(ClipSpec(TINY_CLIP_NAME, "openai"))
    assert clip.quick_gelu and clip.describe() == {
        "name": TINY_CLIP_NAME,
        "pretrained": "openai",
        "weight": 1.0,
        "config": TINY_CLIP_NAME,
        "quick_gelu": True,
    }
    tokens = clip.tokenizer(["a photo of a dog"])
    with torch.no_grad():
        want = trained.encode_text(tokens)
        plain = open_clip.create_model(TINY_CLIP_NAME, pretrained=None).eval()
        plain.load_state_dict(trained.state_dict())
        assert not torch.allclose(plain.encode_text(tokens), want)  # the activation matters
        assert torch.allclose(clip.model.encode_text(tokens), want, atol=1e-6)
    assert not load_clip(
        parse_clip_spec(f"{TINY_CLIP_NAME}:random")
    ).quick_gelu  # random weights: the config as written


@pytest.mark.parametrize(
    "width,height,resized,box",
    [
        (100, 301, (256, 771), (0, 257, 256, 513)),  # tall: scale 2.56, an odd margin of 515 rows
        (301, 100, (771, 256), (257, 0, 513, 256)),  # wide
    ],
)
def test_square_crop_is_the_hand_computed_resize_and_centre(width, height, resized, box):
    """The short side resized to 256 (bicubic), the long side by the same scale, the box in the
    middle (margin // 2): compared pixel for pixel on noise, where a one-row shift shows."""
    from PIL import Image

    from nada_train.losses import square_crop

    img = Image.fromarray(np.random.RandomState(0).randint(0, 256, (height, width, 3), dtype=np.uint8))
    want = img.resize(resized, Image.BICUBIC).crop(box)
    np.testing.assert_array_equal(np.asarray(square_crop(img)), np.asarray(want))


def test_grey_and_rgba_style_images_are_read_as_rgb(tmp_path):
    from PIL import Image

    from nada_train.losses import load_style_images

    Image.fromarray(np.full((256, 256), 255, np.uint8), mode="L").save(tmp_path / "grey.png")
    Image.fromarray(np.full((256, 256, 4), 255, np.uint8), mode="RGBA").save(tmp_path / "rgba.png")
    x = load_style_images(tmp_path)
    assert x.shape == (2, 3, 256, 256) and torch.equal(x, torch.ones(2, 3, 256, 256))


def test_a_guide_without_clips_is_one_line():
    from nada_train.losses import ClipGuide

    with pytest.raises(NadaError) as e:
        ClipGuide([])
    assert e.value.for_command_line() == "no CLIP model given; name one in --clip, e.g. ViT-B-32"
