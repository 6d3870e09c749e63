"""resolve_options: what nada-train and nada.adapt make of their arguments before a run starts."""

import pytest

from nada_core.errors import NadaError
from nada_train.clip import ClipSpec, parse_clip_spec
from nada_train.options import SETTINGS, option_defaults, resolve_options


def test_a_checkpoint_base_takes_the_defaults_with_absolute_paths(rosinality_ckpt, tmp_path, monkeypatch):
    monkeypatch.chdir(rosinality_ckpt.parent)
    opts = resolve_options(rosinality_ckpt.name, "run", target="sketch")
    assert opts.generator == str(rosinality_ckpt.resolve()) and opts.out == str(tmp_path.resolve() / "run")
    assert (opts.source, opts.target, opts.target_images, opts.allow_pickle) == (
        "photo",
        "sketch",
        None,
        False,
    )
    assert opts.clip == [parse_clip_spec(c) for c in option_defaults()["clip"]] == [ClipSpec("ViT-B-32")]
    assert option_defaults()["clip"] == ["ViT-B-32"]  # the default spec as a user writes it
    styles = tmp_path / "styles"
    styles.mkdir()
    guided = resolve_options(str(rosinality_ckpt), "run", target_images="styles", allow_pickle=True, lr=0.02)
    assert guided.target_images == str(styles.resolve()) and guided.target is None
    assert guided.allow_pickle is True and guided.lr == 0.02
    assert resolve_options("random:16", "run").generator == "random:16"  # not a file: kept as given
    assert resolve_options("random:16", "run", source="dog", target="cat").source == "dog"


def test_a_builtin_base_brings_its_clip_templates_target_and_settings(tmp_path):
    from nada_world.base import RUN_SETTINGS, TARGET_SETTINGS

    world = resolve_options(None, tmp_path / "run")  # no generator: the default built-in base
    named = resolve_options("builtin:world", tmp_path / "run", target="pixel")
    assert (
        world == named and world.target == "pixel" and world.templates and world.templates[0].count("{}") == 1
    )
    assert world.clip[0].name == "nada-world-clip-rn"
    assert world.global_weight == TARGET_SETTINGS["pixel"]["global_weight"]
    guided = resolve_options(None, tmp_path / "run", target_images=str(tmp_path))
    # image-guided: the world's run settings without a target style's own
    assert (
        guided.target is None
        and guided.global_weight == {**option_defaults(), **RUN_SETTINGS}["global_weight"]
    )
    assert resolve_options(None, tmp_path / "run", global_weight=0.9).global_weight == 0.9  # yours win


def test_unknown_settings_and_a_missing_out_are_refused_in_one_line(tmp_path):
    with pytest.raises(NadaError) as e:
        resolve_options(None, tmp_path, lrr=0.1)
    assert str(e.value) == "lrr: not a training setting; the settings are " + ", ".join(sorted(SETTINGS))
    with pytest.raises(NadaError) as e:
        resolve_options(None, None)
    assert e.value.for_command_line() == "--out is required: a new directory for the run"


def test_option_defaults_are_the_dataclass_defaults():
    from dataclasses import fields

    from nada_train.options import TrainOptions

    required = {f.name: "x" for f in fields(TrainOptions) if f.name not in option_defaults()}
    made = TrainOptions(**required)
    defaults = option_defaults()
    assert defaults["iterations"] == 300 and defaults["clip"] == ["ViT-B-32"]
    assert all(getattr(made, k) == v for k, v in defaults.items() if k != "clip")


def test_a_builtin_bases_checkpoint_named_by_its_path_brings_the_base_and_weights_reach_the_clips(tmp_path):
    from nada_train.bases import named_base

    path = str(named_base("builtin:world").generator)
    by_path = resolve_options(path, tmp_path / "run")
    assert by_path == resolve_options("builtin:world", tmp_path / "run")  # its CLIP, templates, target
    weighted = resolve_options(path, tmp_path / "run", clip=["RN50", "ViT-B-32"], clip_weights=[0.25, 0.75])
    assert [(c.name, c.weight) for c in weighted.clip] == [("RN50", 0.25), ("ViT-B-32", 0.75)]
    assert weighted.templates is None  # your CLIPs: the base's templates are not forced on them


def test_an_unknown_parametrization_is_refused_in_one_line(rosinality_ckpt, tmp_path):
    with pytest.raises(NadaError) as e:
        opts = resolve_options(
            str(rosinality_ckpt), tmp_path / "run", target="sketch", parametrization="Channels"
        )
        opts.validate()  # what nada.adapt and nada-train do before a run starts
    assert e.value.for_command_line() == "--parametrization 'Channels': choose one of full, channels, styles"
