"""NVIDIA's .pkl generators, read as data: parity with NVIDIA's own code on fixtures it made
(tests/data/nvidia), and refusals that run nothing."""

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from nada_core.errors import NadaError
from nada_core.fileio import sha256_file
from nada_train.checkpoints import load_generator
from nada_train.generator.inference import render

DATA = Path(__file__).parent / "data" / "nvidia"
NAMES = ["ada32_clamp", "ada16_zw_fp16", "sg3repo-ada16_zw_fp16"]  # the last: stylegan3's StyleGAN2 networks
TRUNCATIONS = {"t100": 1.0, "t070": 0.7}


@pytest.mark.parametrize("truncation", list(TRUNCATIONS))
@pytest.mark.parametrize("name", NAMES)
def test_images_and_ws_match_nvidia(name, truncation):
    loaded = load_generator(DATA / f"{name}.pkl")
    ref = np.load(DATA / f"{name}.npz")
    assert (loaded.kind, loaded.sha256) == ("nvidia", sha256_file(DATA / f"{name}.pkl"))
    psi = TRUNCATIONS[truncation]
    images = render(loaded.generator, [int(s) for s in ref["seeds"]], psi)  # nada-generate's path
    assert np.abs(images.astype(int) - ref[f"uint8_{truncation}"].astype(int)).max() <= 1
    with torch.no_grad():
        ws = loaded.generator.ws(torch.from_numpy(ref["z"]), psi)
    np.testing.assert_allclose(ws.numpy(), ref[f"ws_{truncation}"], rtol=0, atol=1e-5)


def test_what_the_tensors_do_not_say_comes_across():
    c = load_generator(DATA / "ada32_clamp.pkl").generator.config
    assert (c.size, c.style_dim, c.z_dim, c.n_mlp, c.channels, c.lr_mlp, c.conv_clamp) == (
        32,
        16,
        16,
        2,
        (24, 24, 16, 8),
        0.01,
        1.0,
    )
    c = load_generator(DATA / "ada16_zw_fp16.pkl").generator.config
    assert (c.z_dim, c.style_dim, c.mlp_widths, c.conv_clamp) == (12, 20, [12, 14, 14, 20], 256.0)
    assert not c.rosinality_compatible


def test_the_clamp_is_what_makes_the_match():
    """Without NVIDIA's conv_clamp the 32-px fixture's images come out different."""
    from dataclasses import replace

    from nada_train.generator import Generator

    g = load_generator(DATA / "ada32_clamp.pkl").generator
    unclamped = Generator(replace(g.config, conv_clamp=None))
    unclamped.load_state_dict(g.state_dict())
    unclamped.set_w_avg(g.w_avg)
    ref = np.load(DATA / "ada32_clamp.npz")
    assert np.abs(render(unclamped, [0, 1, 2, 3], 1.0).astype(int) - ref["uint8_t100"].astype(int)).max() > 10


@pytest.mark.parametrize(
    "name,match",
    [
        ("ada8_conditional.pkl", "class-conditional generator \\(c_dim 3\\)"),
        ("ada8_resnet.pkl", "synthesis architecture 'resnet'"),
        ("ada8_discriminator_only.pkl", "no G_ema in this pickle \\(it holds: D\\)"),
    ],
)
def test_networks_nada_cannot_read_are_refused_in_one_line(name, match):
    with pytest.raises(NadaError, match=match):
        load_generator(DATA / name)


class RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_would_run_code_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"G_ema": RunsCode(marker)}))
    with pytest.raises(NadaError, match=r"asks for (posix|nt|os)\.system.*refused without running anything"):
        load_generator(path)
    assert not marker.exists()
    with open(path, "rb") as f:  # the same file through plain pickle does run it: the test's payload is real
        pickle.load(f)
    assert marker.exists()


def test_the_embedded_module_source_is_never_run(tmp_path):
    """NVIDIA's persistent objects carry their module's source as text; conversion works from their
    state alone, so a source that would write a file when run writes nothing."""
    from nada_train.nvidia_pickle import _stylegan2, read_pickle

    marker = tmp_path / "ran"
    g = read_pickle(DATA / "ada16_zw_fp16.pkl")["G_ema"]
    assert "class SynthesisBlock" in g.module_src

    def plant(obj):
        obj.module_src = f"open({str(marker)!r}, 'w').write('ran')\n" + obj.module_src
        for child in (obj.state.get("_modules") or {}).values():
            plant(child)

    plant(g)
    converted = _stylegan2(g, "planted")
    assert converted.config.z_dim == 12 and not marker.exists()


def test_tensorflow_era_and_truncated_pickles_get_one_line(tmp_path):
    tf = tmp_path / "karras2019stylegan-ffhq-1024x1024.pkl"
    tf.write_bytes(b"\x80\x02cdnnlib.tflib.network\nNetwork\nq\x00)\x81q\x01.")
    with pytest.raises(NadaError, match="TensorFlow-era StyleGAN pickle .*legacy.py"):
        load_generator(tf)
    cut = tmp_path / "cut.pkl"
    cut.write_bytes((DATA / "ada32_clamp.pkl").read_bytes()[:50_000])
    with pytest.raises(NadaError, match="cut.pkl': not a readable NVIDIA pickle"):
        load_generator(cut)


def test_train_generate_and_export_take_a_pkl(tmp_path, tiny_clip_spec, clip_config_dir):
    """The .pkl wherever a checkpoint goes: training records its sha256, nada-generate renders it,
    nada-export verifies and writes it."""
    from nada_export.pipeline import export
    from nada_train.clip import parse_clip_spec
    from nada_train.loop import train
    from nada_train.options import TrainOptions

    pkl = DATA / "ada16_zw_fp16.pkl"
    run = train(
        TrainOptions(
            generator=str(pkl),
            out=str(tmp_path / "run"),
            target="sketch",
            clip=[parse_clip_spec(tiny_clip_spec)],
            iterations=2,
            n_sample=2,
            device="cpu",
            auto_layer_batch=2,
        ),
        progress=False,
    )
    import json

    base = json.loads((run / "manifest.json").read_text())["base"]
    assert base == {"path": str(pkl.resolve()), "sha256": sha256_file(pkl), "kind": "nvidia"}
    code = (
        "import sys; from nada_core.entry_points import generate; sys.argv[0] = 'nada-generate'; generate()"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, str(pkl), "--seeds", "0-3", "--out", str(tmp_path / "png")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    from PIL import Image

    got = np.stack([np.asarray(Image.open(tmp_path / "png" / f"seed{s:04d}.png")) for s in range(4)])
    assert np.abs(got.astype(int) - np.load(DATA / "ada16_zw_fp16.npz")["uint8_t100"].astype(int)).max() <= 1
    report = export(
        [str(pkl), str(run)], tmp_path / "repo", names=["base", "sketch"], max_batch=2, progress=False
    )
    assert report.models == ["base", "sketch"] and all(f.parity.passed for f in report.files)
    assert len([f for f in report.files if f.model.startswith("mapping_")]) == 1  # z 12 -> w 20, shared
