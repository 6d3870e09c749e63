"""The built-in world: renderer, metrics on hand-made cases, and (when its weights are installed)
the shipped CLIP, judge and generator, and the default nada-train run."""

import json

import numpy as np
import pytest
import torch

from nada_world.evaluate import adaptation_metrics, zero_shot_accuracy
from nada_world.models import (
    CLIP_WEIGHTS,
    GEN_CENTRE,
    GENERATOR_WEIGHTS,
    JUDGE_WEIGHTS,
    clip_model_name,
    direction_templates,
    load_judge,
    scene_of_z,
)
from nada_world.render import COLOURS, SHAPES, STYLES, Scene, random_scene, render
from tests.conftest import refused

WEIGHTS = CLIP_WEIGHTS.exists() and JUDGE_WEIGHTS.exists() and GENERATOR_WEIGHTS.exists()
needs_weights = pytest.mark.skipif(
    not WEIGHTS, reason="the world's trained weights are not in nada_world/assets"
)


def test_renderer_is_deterministic_and_in_range():
    s = random_scene(np.random.default_rng(0))
    a, b = render(s), render(s)
    assert a.shape == (64, 64, 3) and a.dtype == np.float32
    assert np.array_equal(a, b) and 0 <= a.min() and a.max() <= 1
    assert a.std() > 0.05  # a picture, not a flat fill


def known_scene(shape: str, colour: str, style: str, **kw) -> Scene:
    """Centred, unrotated, usual backdrop with a blue-ish hue (nuisance[0] 0.6)."""
    fields = dict(
        shape=SHAPES.index(shape),
        colour=COLOURS.index(colour),
        style=STYLES.index(style),
        cx=0.5,
        cy=0.5,
        radius=0.25,
        angle=0.0,
        nuisance=(0.6, 0.5, 0.5, 0.5, 0.5, 0.3),
    )
    return Scene(**{**fields, **kw})


def test_known_scenes_have_their_colours_where_the_shape_is():
    """Pixel checks: the object's colour inside it, the backdrop outside, each style's own marks."""
    centre, corner = (32, 32), (3, 3)
    red = render(known_scene("circle", "red", "photo"))
    r, g, b = red[centre]
    assert r > 0.5 and r > 2 * g and r > 2 * b  # a red circle
    assert red[corner][2] > red[corner][0]  # on a blue-ish backdrop
    green = render(known_scene("square", "green", "photo"))
    assert green[centre][1] > 2 * green[centre][0] and green[centre][1] > 2 * green[centre][2]
    # the square reaches its corner at 0.85 r along both axes, the circle does not
    diagonal = (32 - 12, 32 - 12)
    assert green[diagonal][1] > 2 * green[diagonal][0] and not red[diagonal][0] > 2 * red[diagonal][2]

    pixel = render(known_scene("circle", "yellow", "pixel"))
    assert np.allclose(pixel[centre] * 4, np.round(pixel[centre] * 4))  # the 5-level palette
    assert pixel[centre][0] >= 0.75 and pixel[centre][1] >= 0.75 and pixel[centre][2] <= 0.25  # yellow
    # blocks
    assert np.array_equal(pixel[32, 32], pixel[32, 33]) or np.array_equal(pixel[32, 32], pixel[32, 31])

    neon = render(known_scene("circle", "blue", "neon", nuisance=(0.6, 0.2, 0.5, 0.5, 0.5, 0.3)))
    on_tube = neon[32, 32 + 16]  # radius 0.25 of 64 px: the outline, where the tube glows
    assert on_tube.mean() > 0.6 and neon[corner].mean() < 0.2 and neon[centre].mean() < on_tube.mean() - 0.2

    sketch = render(known_scene("circle", "red", "sketch", nuisance=(0.6, 0.8, 0.8, 0.5, 0.5, 0.3)))
    outline = sketch[32, 32 + 16]
    assert outline.mean() < sketch[corner].mean() - 0.15  # pencil on light paper
    assert outline[0] > outline[2]  # red pencil


def test_every_factor_changes_the_image():
    base = Scene(shape=0, colour=0, style=0, cx=0.5, cy=0.5, radius=0.22, angle=0.0, nuisance=(0.5,) * 6)
    ref = render(base)
    for field, values in (
        ("shape", range(len(SHAPES))),
        ("colour", range(len(COLOURS))),
        ("style", range(len(STYLES))),
        ("cx", (0.35, 0.65)),
        ("radius", (0.17, 0.27)),
    ):
        images = [render(Scene(**{**base.to_dict(), field: v})) for v in values]
        for v, img in zip(values, images):
            if v != getattr(base, field):
                assert np.abs(img - ref).mean() > 0.01, (field, v)


def test_shape_masks_differ_and_cover_the_shape():
    from nada_world.render import signed_distance

    areas = []
    for k in range(len(SHAPES)):
        sd = signed_distance(Scene(k, 0, 0, 0.5, 0.5, 0.25, 0.0, (0.5,) * 6))
        inside = sd < 0
        assert inside[32, 32]  # centre inside
        assert not inside[0, 0]
        areas.append(inside.mean())
    assert len({round(a, 3) for a in areas}) == len(SHAPES)


def test_random_scenes_cover_all_factors():
    rng = np.random.default_rng(1)
    scenes = [random_scene(rng) for _ in range(400)]
    assert {s.shape for s in scenes} == set(range(len(SHAPES)))
    assert {s.colour for s in scenes} == set(range(len(COLOURS)))
    assert {s.style for s in scenes} == set(range(len(STYLES)))


def best_threshold_accuracy(a: list[float], b: list[float]) -> float:
    """How well one threshold on a single number tells two groups apart (0.5: not at all, 1: fully)."""
    values = np.array(a + b)
    is_a = np.array([True] * len(a) + [False] * len(b))
    best = max(np.mean((values <= t) == is_a) for t in values)
    return max(best, max(np.mean((values > t) == is_a) for t in values))


def test_brightness_does_not_give_the_style_away():
    """No pair of styles can be told apart by mean brightness alone: the extreme backdrops put dark
    and light renders in every style (before them, a dark image was always neon). The same check
    does find that shortcut where it is planted: neon and photos on their usual backdrops only."""
    rng = np.random.default_rng(2)
    means = {
        st: [float(render(random_scene(rng, style=i)).mean()) for _ in range(80)]
        for i, st in enumerate(STYLES)
    }
    for i, a in enumerate(STYLES):
        for b in STYLES[i + 1 :]:
            assert best_threshold_accuracy(means[a], means[b]) < 0.8, (a, b)

    def with_backdrop(style: str, e: float) -> list[float]:  # nuisance[4] fixed: as the renderer was before
        scenes = [random_scene(rng, style=STYLES.index(style)) for _ in range(80)]
        return [
            float(render(Scene(**{**s.to_dict(), "nuisance": s.nuisance[:4] + (e,) + s.nuisance[5:]})).mean())
            for s in scenes
        ]

    assert best_threshold_accuracy(with_backdrop("photo", 0.5), with_backdrop("neon", 0.5)) >= 0.9


def test_extreme_backdrops_keep_the_usual_look_at_the_middle():
    """nuisance[4] in [0.25, 0.75) draws the style's usual backdrop (the generator's photos use 0.5);
    below it a near-black one, at or above 0.75 a near-white one, in every style."""
    for style in range(len(STYLES)):
        base = Scene(
            shape=1,
            colour=2,
            style=style,
            cx=0.5,
            cy=0.5,
            radius=0.22,
            angle=0.0,
            nuisance=(0.3, 0.5, 0.5, 0.5, 0.5, 0.5),
        )
        with_e = lambda e: render(Scene(**{**base.to_dict(), "nuisance": (0.3, 0.5, 0.5, 0.5, e, 0.5)}))  # noqa: E731, B023
        assert np.array_equal(with_e(0.3), with_e(0.7)), STYLES[style]
        corner = lambda img: img[:6, :6].mean()  # noqa: E731  (backdrop only: the object is centred)
        assert corner(with_e(0.1)) < 0.25 < 0.75 < corner(with_e(0.9)), STYLES[style]


def test_scene_of_z_uses_argmax_and_cdf():
    z = torch.zeros(2, 64)
    z[0, 2] = 3.0  # triangle
    z[0, 4 + 3] = 2.0  # yellow
    z[1, 9] = 10.0  # far right
    s = scene_of_z(z)
    assert (s[0].shape, s[0].colour, s[0].style) == (2, 3, 0)
    assert s[0].cx == pytest.approx(sum(GEN_CENTRE) / 2) and s[1].cx == pytest.approx(GEN_CENTRE[1])


def test_direction_templates_average_out_content():
    t = direction_templates()
    assert len(t) == 4 * len(COLOURS) * len(SHAPES) and all("{}" in x for x in t)


class FakeJudge:
    def __init__(self, answers):
        self.answers = iter(answers)

    def predict(self, images):
        return next(self.answers)


def test_adaptation_metrics_on_hand_made_cases():
    frozen = {
        "style": np.array([0, 0, 0, 0]),
        "shape": np.array([1, 2, 3, 0]),
        "colour": np.array([0, 1, 2, 3]),
    }
    adapted = {
        "style": np.array([1, 1, 0, 1]),
        "shape": np.array([1, 2, 0, 0]),
        "colour": np.array([0, 4, 2, 3]),
    }
    m = adaptation_metrics(FakeJudge([frozen, adapted]), None, None, target_style=1)
    assert m["target_style_rate"] == 0.75
    assert m["content_kept_rate"] == 0.5  # index 1 changed colour, index 2 changed shape
    assert m["frozen_target_style_rate"] == 0.0
    assert m["adapted_style_counts"] == {"photo": 1, "sketch": 3, "neon": 0, "pixel": 0}


@pytest.mark.parametrize(
    "mistakes,want",
    [
        ({}, {"style": 1.0, "shape": 1.0, "colour": 1.0}),
        ({1: (1, 0, 0), 2: (0, 1, 0), 4: (0, 0, 1)}, {"style": 0.8, "shape": 0.8, "colour": 0.8}),
        ({0: (1, 1, 0), 3: (2, 0, 0)}, {"style": 0.6, "shape": 0.8, "colour": 1.0}),
    ],
)
def test_zero_shot_accuracy_on_encoders_with_known_errors(mistakes, want):
    """An 'encoder' that puts each image exactly on a combo's text embedding: its own combo, or for
    the images in `mistakes` one with (style, shape, colour) shifted by the given steps."""
    combos = [(st, sh, co) for st in range(4) for sh in range(4) for co in range(5)]
    rng = np.random.default_rng(0)
    table = torch.nn.functional.normalize(
        torch.from_numpy(rng.normal(size=(80, 16)).astype(np.float32)), dim=1
    )
    texts = {}
    from nada_world.models import caption

    for i, (st, sh, co) in enumerate(combos):
        for t in range(4):
            texts[caption(STYLES[st], COLOURS[co], SHAPES[sh], t)] = table[i]
    enc_t = lambda caps: torch.stack([texts[c] for c in caps])  # noqa: E731
    pick = [3, 17, 42, 79, 0]
    images = torch.tensor(pick)
    shown = []
    for k, i in enumerate(pick):
        st, sh, co = combos[i]
        dst, dsh, dco = mistakes.get(k, (0, 0, 0))
        shown.append(combos.index(((st + dst) % 4, (sh + dsh) % 4, (co + dco) % 5)))
    enc_i = lambda idx: table[torch.tensor([shown[pick.index(int(i))] for i in idx])]  # noqa: E731
    style = torch.tensor([combos[i][0] for i in pick])
    shape = torch.tensor([combos[i][1] for i in pick])
    colour = torch.tensor([combos[i][2] for i in pick])
    acc = zero_shot_accuracy(enc_i, enc_t, images, style, shape, colour)
    assert acc == pytest.approx(want)


def recorded(path, key) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return json.loads((f.metadata() or {})[key])


@needs_weights
def test_shipped_clip_and_judge_reach_their_recorded_accuracy():
    """On 300 fresh renders (other seeds than the scripts used), each factor's accuracy is within
    sampling error of what the training script measured on 1000 and recorded in the weights."""
    from nada_world.data import sample
    from nada_world.evaluate import judge_accuracy
    from nada_world.models import load_world_clip

    test = sample(300, np.random.default_rng(777))
    judge_acc = judge_accuracy(load_judge(), test.images, test.style, test.shape, test.colour)
    assert min(judge_acc.values()) >= 0.95, judge_acc
    clip = load_world_clip()
    clip_acc = zero_shot_accuracy(
        clip.encode_images, clip.encode_texts, test.images, test.style, test.shape, test.colour
    )
    want = recorded(CLIP_WEIGHTS, "zero_shot")
    for factor in ("style", "shape", "colour"):
        assert clip_acc[factor] >= want[factor] - 0.08, (factor, clip_acc, want)
    assert clip_acc["style"] >= 0.95  # the factor the directional loss relies on


@needs_weights
def test_shipped_clip_and_judge_do_not_read_the_style_off_the_backdrop():
    """On dark and on light backdrops alone, both still name the style (the models before the extreme
    backdrops called a photo on black neon)."""
    from nada_world.data import sample
    from nada_world.evaluate import style_accuracy_by_backdrop, zero_shot_predict
    from nada_world.models import load_world_clip

    test = sample(300, np.random.default_rng(778))
    clip = load_world_clip()
    for who, style in (
        ("judge", load_judge().predict(test.images)["style"]),
        ("clip", zero_shot_predict(clip.encode_images, clip.encode_texts, test.images)[0].numpy()),
    ):
        by_backdrop = style_accuracy_by_backdrop(style, test.scenes)
        assert set(by_backdrop) == {"dark", "usual", "light"}
        assert min(by_backdrop.values()) >= 0.9, (who, by_backdrop)


def test_style_accuracy_by_backdrop_on_a_hand_made_case():
    from nada_world.evaluate import style_accuracy_by_backdrop

    scenes = [
        Scene(0, 0, style, 0.5, 0.5, 0.2, 0.0, (0.5, 0.5, 0.5, 0.5, e, 0.5))
        for style, e in ((0, 0.1), (2, 0.1), (1, 0.5), (3, 0.9))
    ]
    # the dark photo called neon, the rest right
    assert style_accuracy_by_backdrop([2, 2, 1, 3], scenes) == {"dark": 0.5, "usual": 1.0, "light": 1.0}


@needs_weights
def test_shipped_generator_draws_photo_scenes_as_recorded():
    from nada_train.checkpoints import load_generator
    from nada_world.data import from_scenes

    g = load_generator(GENERATOR_WEIGHTS).generator
    z = torch.randn(128, 64, generator=torch.Generator().manual_seed(99))
    with torch.no_grad():
        images = g(z)
    pred = load_judge().predict(images)
    truth = from_scenes(scene_of_z(z))
    want = recorded(GENERATOR_WEIGHTS, "world_report")
    assert np.mean(pred["style"] == 0) >= 0.9  # photos: the other styles are out of its domain
    assert np.mean(pred["shape"] == truth.shape.numpy()) >= want["shape"] - 0.1
    assert np.mean(pred["colour"] == truth.colour.numpy()) >= want["colour"] - 0.1


@needs_weights
def test_default_run_end_to_end(tmp_path, monkeypatch, capsys):
    """nada-train with the world's defaults (3 steps), as its console script runs it; then --eval-only
    gives the same metrics, judged against the same frozen images (drawn once in a process)."""
    from nada_world.base import EVAL_SEEDS, TARGET_SETTINGS, frozen_images
    from tests.test_cli import run_in_process

    out = tmp_path / "run"
    code, printed, err = run_in_process(
        monkeypatch, capsys, "nada-train", "--out", str(out), "--iterations", "3", "--quiet"
    )
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    kept, ceiling = metrics["content_kept_rate"], metrics["content_kept_ceiling"]
    assert f"content_kept_rate {kept:.2f} of a possible {ceiling:.2f};" in printed + err
    assert metrics["target"] == "pixel" and metrics["iterations"] == 3 and metrics["n_images"] == 1024
    counts = metrics["adapted_style_counts"]
    assert sum(counts.values()) == 1024 and metrics["target_style_rate"] == counts["pixel"] / 1024
    assert metrics["frozen_target_style_rate"] == 0.0  # the judge calls the generator's own images photos
    assert metrics["frozen_clip_target_rate"] <= 0.05  # and so does the CLIP
    # three steps already move the images along the text direction
    assert metrics["directional_clip_similarity"] > 0.1
    # the judge reads the renderer's drawings as drawn: the ceiling is the share of the frozen images it
    # reads as the scene their latent stands for
    from nada_core.seeds import z_batch
    from nada_train.checkpoints import load_generator

    frozen = load_judge().predict(frozen_images(EVAL_SEEDS, "cpu"))
    z_dim = load_generator(GENERATOR_WEIGHTS).generator.config.z_dim
    scenes = scene_of_z(torch.from_numpy(z_batch(list(range(EVAL_SEEDS)), z_dim)))
    read_as_meant = np.mean(
        [(s.shape, s.colour) == (a, b) for s, a, b in zip(scenes, frozen["shape"], frozen["colour"])]
    )
    assert (
        0.5 < metrics["content_kept_ceiling"] < 1
        and abs(metrics["content_kept_ceiling"] - read_as_meant) < 0.01
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["clip"][0] == {
        "name": clip_model_name(CLIP_WEIGHTS),
        "pretrained": str(CLIP_WEIGHTS),
        "weight": 1.0,
        "config": clip_model_name(CLIP_WEIGHTS),
        "quick_gelu": False,
    }
    assert manifest["arguments"]["templates"] == direction_templates()
    args = manifest["arguments"]
    assert (args["layers"], args["lr"], args["global_weight"], args["batch"]) == (
        "all",
        0.01,
        TARGET_SETTINGS["pixel"]["global_weight"],
        4,
    )
    frozen = frozen_images(EVAL_SEEDS, "cpu")  # the run's evaluation drew them
    code, printed, err = run_in_process(monkeypatch, capsys, "nada-train", "--eval-only", str(out))
    assert code == 0, err
    assert json.loads(printed) == json.loads((out / "metrics.json").read_text()) == metrics
    assert frozen_images(EVAL_SEEDS, "cpu") is frozen


@needs_weights
def test_the_frozen_images_are_drawn_once_per_generator_and_count():
    from nada_train.checkpoints import load_generator
    from nada_world.base import GENERATOR_WEIGHTS, frozen_images, images_of_seeds

    eight = frozen_images(8, "cpu")
    assert frozen_images(8, "cpu") is eight
    want = images_of_seeds(load_generator(GENERATOR_WEIGHTS).generator, 8)
    assert torch.equal(eight, want) and eight.shape[0] == 8
    four = frozen_images(4, "cpu")  # another count: drawn again
    assert four.shape[0] == 4 and torch.allclose(four, want[:4], atol=1e-5)  # a batch of 4, not 8


@needs_weights
def test_what_the_user_names_wins_over_the_worlds_settings(tmp_path, monkeypatch):
    from tests.test_cli import parsed_options

    opts = parsed_options(
        monkeypatch,
        "--out",
        str(tmp_path / "own"),
        "--layers",
        "texture",
        "--lr",
        "0.005",
        "--global-weight",
        "0",
    )
    assert (opts.target, opts.layers, opts.lr, opts.global_weight, opts.batch) == (
        "pixel",
        "texture",
        0.005,
        0.0,
        4,
    )


def test_world_settings_take_the_target_styles_global_weight():
    from nada_world.base import RUN_SETTINGS, TARGET_SETTINGS, options_for

    assert set(TARGET_SETTINGS) == set(STYLES) - {"photo"}
    assert options_for("photo", " Pixel ") == {**RUN_SETTINGS, "global_weight": 0.4, "iterations": 700}
    assert options_for("photo", "sketch") == {**RUN_SETTINGS, "global_weight": 0.7}
    assert options_for("photo", "photo")["global_weight"] == RUN_SETTINGS["global_weight"]
    assert options_for("photo", None) == RUN_SETTINGS  # image-guided
    with refused("--target 'oil'"):
        options_for("photo", "oil")
    with refused("--source 'painting'"):
        options_for("painting", "sketch")


@needs_weights
def test_unknown_world_style_is_refused(tmp_path, monkeypatch, capsys):
    from tests.test_cli import in_process

    code, lines = in_process(
        monkeypatch, capsys, "nada-train", "--out", str(tmp_path / "r"), "--target", "watercolour"
    )
    assert (code, lines) == (
        2,
        [
            "nada-train: error: --target 'watercolour': the built-in world knows the styles photo, sketch, "
            "neon, pixel; name one of them"
        ],
    )
    assert not (tmp_path / "r").exists()


def test_object_weighted_l1_counts_the_object_five_times():
    """Errors only on the object (and its 3-px rim): weighted they make 5n / (5n + rest) of the mean,
    where plain L1 would give n / all."""
    from nada_world.render import signed_distance
    from nada_world.train_generator import object_weight, object_weighted_l1

    scene = Scene(shape=3, colour=1, style=0, cx=0.5, cy=0.5, radius=0.22, angle=0.1, nuisance=(0.5,) * 6)
    near = torch.from_numpy(signed_distance(scene) < 3).float()
    n, total = float(near.sum()), near.numel()
    target = near.expand(1, 3, 64, 64).clone()
    loss = object_weighted_l1(torch.zeros(1, 3, 64, 64), target, object_weight([scene]))
    assert loss.item() == pytest.approx(5 * n / (5 * n + total - n), rel=1e-6)
    assert loss.item() > 2 * n / total


@needs_weights
def test_before_after_figure_rows(tmp_path):
    """Row 0 of the README figure is the built-in generator's own images of the seeds."""
    from nada_core.seeds import z_batch
    from nada_train.checkpoints import load_generator
    from nada_train.images import to_uint8
    from nada_world.figure import before_after

    fig = before_after([GENERATOR_WEIGHTS], [0, 1, 2], scale=1)
    assert fig.shape == (2 * 64 + 2, 3 * 64 + 2 * 2, 3)
    g = load_generator(GENERATOR_WEIGHTS).generator
    with (
        torch.no_grad()
    ):  # computed as the figure computes it, the three seeds in one batch: the same kernels
        second = to_uint8(g(torch.from_numpy(z_batch([0, 1, 2], 64))))[1].numpy()
        alone = to_uint8(g(torch.from_numpy(z_batch([1], 64))))[0].numpy()
    assert np.array_equal(fig[:64, 66:130], second)
    # a batch of one: other kernels, rounding only
    assert np.abs(fig[:64, 66:130].astype(int) - alone.astype(int)).max() <= 1
    assert np.array_equal(fig[:64], fig[66:])  # the same generator twice gives the same row


@needs_weights
def test_generator_figure_puts_the_intended_render_above_the_sample():
    from nada_core.seeds import z_batch
    from nada_train.images import to_uint8
    from nada_world.data import from_scenes
    from nada_world.figure import intended_and_drawn

    fig = intended_and_drawn([GENERATOR_WEIGHTS], [4, 5], scale=1)
    assert fig.shape == (2 * 64 + 2, 2 * 64 + 2, 3)
    render = to_uint8(from_scenes(scene_of_z(torch.from_numpy(z_batch([4, 5], 64)))).images)[
        1
    ].numpy()  # as the figure batches it
    assert np.array_equal(fig[:64, 66:130], render)
    assert not np.array_equal(fig[:64], fig[66:])  # a sample is not its render


@needs_weights
def test_clip_probe_starts_from_the_renders_and_moves_them():
    """With no steps the probe's images are the photo renders (judged photo, content kept); a few
    steps change them."""
    from nada_world.probe_clip import probe

    rates, renders, out = probe("sketch", lr=0.01, steps=0, n=16)
    assert torch.equal(out, renders.clamp(-1, 1))
    assert (
        rates["mean_abs_change"] == 0
        and rates["judge_target_rate"] == 0
        and rates["judge_content_kept"] >= 0.9
    )
    assert rates["clip_target_rate"] <= 0.1
    moved, _, _ = probe("sketch", lr=0.01, steps=3, n=16)
    assert moved["mean_abs_change"] > 0.005


def test_metrics_table_rows_follow_the_runs(tmp_path):
    from nada_world.table import metrics_table

    args = {"target": "neon", "iterations": 600, "lr": 0.01, "layers": "all", "global_weight": 0.3}
    done, unjudged = tmp_path / "done", tmp_path / "unjudged"
    for run in (done, unjudged):
        run.mkdir()
        (run / "manifest.json").write_text(json.dumps({"arguments": args}))
    (done / "metrics.json").write_text(
        json.dumps(
            {
                "target_style_rate": 0.125,
                "content_kept_rate": 0.5,
                "frozen_target_style_rate": 0.0,
                "clip_target_rate": 1.0,
                "directional_clip_similarity": 0.71234,
            }
        )
    )
    (tmp_path / "done.log").write_text("")
    rows = metrics_table([done, tmp_path / "done.log", unjudged]).splitlines()
    assert len(rows) == 4  # header, rule, two runs: the log is not a run
    assert (
        rows[2]
        == "| done | neon, 600 it, lr 0.01, all layers, global 0.3 | 0.12 | 0.50 | 0.00 | 1.00 | 0.712 |"
    )
    assert rows[3].startswith("| unjudged | neon, 600 it") and "(no metrics.json)" in rows[3]


@needs_weights
def test_the_shipped_encoder_reconstructs_fresh_renders_as_recorded():
    """32 renders of latents neither training nor its recorded evaluation drew: the judge's shape
    and colour kept by the reconstruction, and its PSNR, within sampling error of what train_encoder
    measured on 512 and recorded in the file; nada.load_encoder('builtin:world') is that file."""
    from nada_train.encoders.loading import load_encoder
    from nada_world.models import ENCODER_WEIGHTS
    from nada_world.train_encoder import evaluate_encoder

    assert load_encoder("builtin:world").path == str(ENCODER_WEIGHTS)
    got = evaluate_encoder("builtin:world", [], n=32, seed=77)["reconstruction"]
    want = recorded(ENCODER_WEIGHTS, "world_report")
    assert got["content_kept_rate"] >= want["content_kept_rate"] - 0.08
    assert got["psnr_db"] >= want["psnr_db"] - 1.5


@needs_weights
def test_nada_edit_on_the_world_writes_every_promised_file(tmp_path):
    """A fresh render as a user's photo: nada-edit --encoder builtin:world writes the input, the
    reconstruction, the image in the run's domain, the grid and the W+ code."""
    from PIL import Image

    from nada_train.checkpoints import load_generator
    from tests.conftest import adapted_copy
    from tests.test_cli import run
    from tests.test_edit import make_run

    world = load_generator(GENERATOR_WEIGHTS).generator
    pixel = make_run(tmp_path / "pixel", GENERATOR_WEIGHTS, adapted_copy(world, 1))
    photo = render(scene_of_z(torch.randn(1, 64, generator=torch.Generator().manual_seed(5)))[0])
    Image.fromarray((photo * 255).round().astype(np.uint8)).save(tmp_path / "mine.png")
    out = tmp_path / "edits"
    args = [str(tmp_path / "mine.png"), "--encoder", "builtin:world", "--run", str(pixel), "--out", str(out)]
    r = run(["nada_train.cli.edit", "nada-edit", *args, "--grid", "--save-latents"])
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (out / "mine").iterdir()) == [
        "grid.png",
        "input.png",
        "pixel.png",
        "reconstruction.png",
    ]
    assert np.load(out / "mine.npy").shape == (world.n_latent, 64)
    assert "mine: reconstruction PSNR " in r.stdout and "(e4e encoder)" in r.stdout
