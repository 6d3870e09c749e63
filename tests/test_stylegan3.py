"""StyleGAN3 (configs T and R) read from NVIDIA's .pkl files, against NVIDIA's own outputs
(tests/data/nvidia, made by make_sg3_fixtures.py), then adapted, exported and checked like StyleGAN2."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from nada_core.errors import NadaError
from nada_export.onnx_export import export_verified, onnx_session
from nada_train.checkpoints import load_generator, save_safetensors
from nada_train.generator import StyleGAN3Generator
from nada_train.generator.inference import render
from nada_train.generator.stylegan3_layers import fir, pad_or_crop
from nada_train.layer_selection import codes_with_layers, manual_layers
from nada_train.loop import train
from tests.test_trainer import options

DATA = Path(__file__).parent / "data" / "nvidia"
NAMES = ["sg3t16", "sg3t32_short_clamp", "sg3r16"]
TRUNCATIONS = {"t100": 1.0, "t070": 0.7}


def sg3(name: str = "sg3t16") -> StyleGAN3Generator:
    return load_generator(DATA / f"{name}.pkl").generator


@pytest.mark.parametrize("truncation", list(TRUNCATIONS))
@pytest.mark.parametrize("name", NAMES)
def test_images_and_ws_match_nvidia(name, truncation):
    ref = np.load(DATA / f"{name}.npz")
    g = sg3(name)
    psi = TRUNCATIONS[truncation]
    images = render(g, [int(s) for s in ref["seeds"]], psi)  # nada-generate's path
    want = ref[f"uint8_{truncation}"]
    assert images.shape == want.shape
    assert np.abs(images.astype(int) - want.astype(int)).max() <= 2
    assert want.std() > 5  # the fixture's images are not flat
    with torch.no_grad():
        ws = g.ws(torch.from_numpy(ref["z"]), psi)
    np.testing.assert_allclose(ws.numpy(), ref[f"ws_{truncation}"], rtol=0, atol=1e-5)


def test_configs_t_and_r_come_across():
    t, r = sg3("sg3t16"), sg3("sg3r16")
    assert isinstance(t, StyleGAN3Generator) and t.n_latent == 16 and len(t.layers) == 14  # NVIDIA's num_ws
    assert {spec.kernel for spec in t.config.layers[:-1]} == {3} and not any(
        s.radial for s in t.config.layers
    )
    assert {spec.kernel for spec in r.config.layers} == {1}
    radial = [layer.down_filter for layer in r.layers if layer.spec.radial]
    assert radial and all(f.ndim == 2 for f in radial)  # R: 2-D jinc filters, stored as the file has them
    short = sg3("sg3t32_short_clamp")
    assert short.config.conv_clamp == 1.0 and short.n_latent == 8
    assert not torch.equal(short.input.transform, torch.eye(3))  # generate.py's user transform travels


def test_the_alias_free_ops_against_hand_computation():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    assert torch.equal(pad_or_crop(x, 1, -1, -2, 0), torch.nn.functional.pad(x, (1, 0, 0, 0))[:, :, 2:, :4])
    taps = torch.tensor([1.0, 2.0, 4.0])
    got = fir(x, taps, gain=4.0, stride=2)  # separable, convolution (flipped), gain split between axes
    k2 = torch.outer(taps, taps).flip((0, 1)) * 4.0
    want = torch.nn.functional.conv2d(x, k2[None, None])[:, :, ::2, ::2]
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(fir(x, torch.outer(taps, taps), gain=4.0, stride=2), want)


def test_each_w_code_drives_exactly_the_layers_it_names():
    g = sg3()
    received = {}
    hooks = [
        m.affine.register_forward_hook(lambda mod, inp, out, name=name: received.__setitem__(name, inp[0]))
        for name, m in g.named_modules()
        if hasattr(m, "affine")
    ]
    ws = torch.randn(1, g.n_latent, g.config.style_dim)
    with torch.no_grad():
        g.synthesis(ws)
    for h in hooks:
        h.remove()
    assert len(received) == g.n_latent
    for code in range(g.n_latent):
        fed = {name for name, w in received.items() if torch.equal(w, ws[:, code])}
        assert fed == set(g.layers_of_code(code, include_torgb=True)), code
    assert g.layers_of_code(g.n_latent - 1) == []  # the ToRGB's code trains nothing unless asked
    assert codes_with_layers(g) == list(range(g.n_latent - 1))


def test_layer_sets_are_disjoint_where_they_should_be():
    g = sg3()
    every = set(manual_layers(g, "all"))
    shape, texture = set(manual_layers(g, "shape")), set(manual_layers(g, "texture"))
    assert every == {"input"} | {f"layers.{i}" for i in range(14)}
    assert shape | texture == every and not shape & texture and "layers.0" in shape and "layers.13" in texture


def test_an_image_does_not_depend_on_its_batch():
    g = sg3("sg3r16")
    ws = g.ws(torch.randn(3, g.config.z_dim), 0.7).detach().clone()
    ws[1] *= 3.0  # another sample's styles much larger: NVIDIA's batch-wide style norm would couple them
    with torch.no_grad():
        alone = g.synthesis(ws[:1])
        together = g.synthesis(ws)[:1]
    torch.testing.assert_close(alone, together, rtol=0, atol=1e-5)


def test_nada_trains_exports_and_reloads_a_stylegan3_base(tmp_path, tiny_clip_spec):
    base_path = DATA / "sg3t16.pkl"
    run = train(
        options(base_path, tmp_path / "run", tiny_clip_spec, iterations=2, auto_layer_k=3, lr=0.01),
        progress=False,
    )
    base, adapted = sg3(), load_generator(run).generator
    assert isinstance(adapted, StyleGAN3Generator)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["generator_config"]["architecture"] == "stylegan3"
    chosen = {
        name for line in (run / "log.jsonl").read_text().splitlines() for name in json.loads(line)["layers"]
    }
    assert 1 <= len(chosen) <= 6
    changed = {
        name.rsplit(".", 1)[0].removesuffix(".affine")
        for name, p in adapted.named_parameters()
        if not torch.equal(p, dict(base.named_parameters())[name])
    }
    assert changed == chosen  # exactly the selected layers learned; mapping and ToRGB frozen
    images = render(adapted, [0, 1], 1.0)
    assert (
        images.shape == (2, 16, 16, 3)
        and np.abs(images.astype(int) - render(base, [0, 1], 1.0).astype(int)).max() > 0
    )
    save_safetensors(adapted, tmp_path / "again.safetensors")
    np.testing.assert_array_equal(
        render(load_generator(tmp_path / "again.safetensors").generator, [3], 0.7), render(adapted, [3], 0.7)
    )
    for kind in ("mapping", "synthesis"):
        parity = export_verified(adapted, kind, tmp_path / f"{kind}.onnx", max_batch=3)
        assert parity.passed, parity
    out = onnx_session(tmp_path / "synthesis.onnx").run(
        None, {"ws": adapted.ws(torch.zeros(3, 12)).detach().numpy()}
    )[0]
    assert out.shape == (3, 16, 16, 3)


def test_a_stylegan3_generator_cannot_be_written_in_rosinalitys_format(tmp_path):
    from nada_train.checkpoints import save_rosinality

    with pytest.raises(NadaError, match="StyleGAN2 generators only"):
        save_rosinality(sg3(), tmp_path / "x.pt")
