"""NVIDIA's .pkl generators, read as data: parity with NVIDIA's own code on fixtures it made
(tests/data/nvidia), and refusals that run nothing."""

import math
import os
import pickle
import re
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
    with pytest.raises(NadaError, match=f"^generator '{re.escape(str(DATA / name))}': .*{match}"):
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


# --- a snapshot checked as data: each refusal and each field, on a changed copy of a fixture's tree
def snapshot(name: str = "ada32_clamp.pkl") -> dict:
    from nada_train.nvidia_pickle import read_pickle

    return read_pickle(DATA / name)  # a fresh tree each call: the changes below stay in one test


def refusal(data) -> str:
    from nada_train.nvidia_pickle import generator_from_snapshot

    with pytest.raises(NadaError) as e:
        generator_from_snapshot(data, "f.pkl")
    return str(e.value)


def layers_of(obj):
    """Every persistent object of a tree, depth first."""
    from nada_train.nvidia_pickle import PersistentObject

    yield obj
    for child in (obj.state.get("_modules") or {}).values():
        if isinstance(child, PersistentObject):
            yield from layers_of(child)


def sg3_layer(g, i: int):
    synthesis = g.child("synthesis")
    return synthesis.child(synthesis.attr("layer_names")[i])


def _four_channels(g):
    g.state["img_channels"] = 4


def _linear_mapping(g):
    g.child("mapping").child("fc1").state["activation"] = "linear"


def _other_filter(g):
    g.child("synthesis").child("b4").state["_buffers"]["resample_filter"] = torch.ones(4, 4) / 16


def _no_mapping(g):
    del g.state["_modules"]["mapping"]


def _no_w_avg(g):
    del g.child("mapping").state["_buffers"]["w_avg"]


def _sg2_torgb_of_another_width(g):
    g.child("synthesis").child("b8").child("torgb").state["_parameters"]["weight"] = torch.zeros(3, 5, 1, 1)


def _sg3_layer_of_another_width(g):
    sg3_layer(g, 1).state["_parameters"]["weight"] = torch.zeros(16, 5, 3, 3)


def _sg3_without_a_filter(g):
    del sg3_layer(g, 1).state["_buffers"]["down_filter"]


def _not_square(g):
    sg3_layer(g, 0).state["out_size"] = np.array([36, 37])


def _two_clamps(g):
    sg3_layer(g, 0).state["conv_clamp"] = 128


def _geometry_that_does_not_add_up(g):
    sg3_layer(g, 1).state["out_size"] = np.array([35, 35])


FIT = "generator 'f.pkl': tensors do not fit (Error(s) in loading state_dict for "
REFUSALS = [
    ("ada32_clamp.pkl", _four_channels, "generator 'f.pkl': 4 image channels; nada needs RGB (3)"),
    ("ada32_clamp.pkl", _linear_mapping, "generator 'f.pkl': a mapping network activation other than lrelu"),
    ("sg3t16.pkl", _linear_mapping, "generator 'f.pkl': a mapping network activation other than lrelu"),
    ("ada32_clamp.pkl", _other_filter, "generator 'f.pkl': a resample filter other than [1, 3, 3, 1]"),
    (
        "ada32_clamp.pkl",
        _no_mapping,
        "generator 'f.pkl': G_ema lacks 'mapping'; not a StyleGAN2 generator nada can read",
    ),
    (
        "sg3t16.pkl",
        _no_w_avg,
        "generator 'f.pkl': G_ema lacks 'w_avg'; not a StyleGAN2 generator nada can read",
    ),
    (
        "ada32_clamp.pkl",
        _sg2_torgb_of_another_width,
        FIT + "Generator: size mismatch for to_rgbs.0.conv.weight",
    ),
    (
        "sg3t16.pkl",
        _sg3_layer_of_another_width,
        FIT + "StyleGAN3Generator: size mismatch for layers.1.weight",
    ),
    (
        "sg3t16.pkl",
        _sg3_without_a_filter,
        FIT + 'StyleGAN3Generator: Missing key(s) in state_dict: "layers.1.down_filter".)',
    ),
    (
        "sg3t16.pkl",
        _not_square,
        "generator 'f.pkl': layer L0_36_16 is not square ([36, 36] -> [36, 37]); nada reads square "
        "StyleGAN3 generators",
    ),
    ("sg3t16.pkl", _two_clamps, "generator 'f.pkl': layers clamp at different limits ['128', '256']"),
    (
        "sg3t16.pkl",
        _geometry_that_does_not_add_up,
        "generator 'f.pkl': layer geometry does not add up: 36 px in, up 2, padding [9, 8, 9, 8], filters "
        "12/12, down 2 gives 36, not 35",
    ),
]


@pytest.mark.parametrize("name,change,message", REFUSALS, ids=[r[1].__name__.strip("_") for r in REFUSALS])
def test_each_refusal_of_a_snapshot_names_the_file_and_what_is_wrong(name, change, message):
    data = snapshot(name)
    change(data["G_ema"])
    got = refusal(data)
    if "size mismatch" in message:  # torch's own words follow, cut to 200 characters: one readable line
        detail = got[len("generator 'f.pkl': tensors do not fit (") : -1]
        assert got.startswith(message) and got.endswith(")") and len(detail) == 200, got
    else:
        assert got == message


def test_whole_refusal_lines_of_the_fixtures_nada_cannot_read():
    from nada_train.nvidia_pickle import generator_from_snapshot

    assert refusal(snapshot("ada8_conditional.pkl")) == (
        "generator 'f.pkl': a class-conditional generator (c_dim 3); nada adapts unconditional generators only"
    )
    assert refusal(snapshot("ada8_resnet.pkl")) == (
        "generator 'f.pkl': synthesis architecture 'resnet'; nada reads 'skip' (StyleGAN2 config-f and "
        "stylegan2-ada's default)"
    )
    tail = "; pass a network snapshot with its generator, as NVIDIA's training writes them"
    assert refusal(snapshot("ada8_discriminator_only.pkl")) == (
        "generator 'f.pkl': no G_ema in this pickle (it holds: D)" + tail
    )
    assert refusal({"G": 1, "D": 2}) == "generator 'f.pkl': no G_ema in this pickle (it holds: G, D)" + tail
    assert refusal([1, 2]) == "generator 'f.pkl': no G_ema in this pickle (it holds: list)" + tail
    with pytest.raises(NadaError, match=r"^generator 'f.pkl': G_ema is 3, not one of NVIDIA's Generator"):
        generator_from_snapshot({"G_ema": 3}, "f.pkl")


def test_fields_the_fixtures_never_vary_are_read_too():
    """Defaults where a field is missing, and the fields every fixture holds at one value: each set
    to another value in a copy must come across."""
    from nada_train.nvidia_pickle import generator_from_snapshot

    data = snapshot()
    for key in ("c_dim", "img_channels"):  # older snapshots may lack them: unconditional RGB
        del data["G_ema"].state[key]
    for fc in ("fc0", "fc1"):  # NVIDIA's lr_multiplier, stored as each layer's bias gain
        data["G_ema"].child("mapping").child(fc).state["bias_gain"] = 0.05
    for layer in layers_of(data["G_ema"]):
        if "conv_clamp" in layer.state:
            layer.state["conv_clamp"] = None
    c = generator_from_snapshot(data, "f.pkl").config
    assert (c.lr_mlp, c.conv_clamp) == (0.05, None)
    assert (c.z_features, c.mlp_features) == (None, None)  # z, hidden and w all 16: the canonical form

    data = snapshot("sg3t16.pkl")
    data["G_ema"].child("synthesis").state["output_scale"] = 0.5
    for layer in layers_of(data["G_ema"]):
        if "conv_clamp" in layer.state:
            layer.state["conv_clamp"] = None
    c = generator_from_snapshot(data, "f.pkl").config
    assert (c.output_scale, c.conv_clamp) == (0.5, None)


def test_a_mapping_of_two_layers_with_its_own_hidden_width():
    """NVIDIA's layer_features with num_layers 2: fc0 is z -> hidden, fc1 hidden -> w; the hidden
    width comes from fc0 (fc1's rows are w's) and the network computes what NVIDIA's would."""
    from nada_train.nvidia_pickle import generator_from_snapshot

    data = snapshot()
    mapping = data["G_ema"].child("mapping")
    gen = torch.Generator().manual_seed(0)
    for fc, shape in (("fc0", (20, 16)), ("fc1", (16, 20))):
        layer = mapping.child(fc)
        params = layer.state["_parameters"]
        params["weight"], params["bias"] = (
            torch.randn(*shape, generator=gen),
            torch.randn(shape[0], generator=gen),
        )
        layer.state["weight_gain"] = 0.01 / math.sqrt(shape[1])  # as NVIDIA's layer would store it
    g = generator_from_snapshot(data, "f.pkl")
    assert (g.config.mlp_features, g.config.mlp_widths) == (20, [16, 20, 16])
    z = torch.randn(3, 16, generator=gen)
    x = z * (z.square().mean(1, keepdim=True) + 1e-8).rsqrt()  # NVIDIA's normalize_2nd_moment
    for fc in ("fc0", "fc1"):  # NVIDIA's FullyConnectedLayer and bias_act's lrelu (0.2, gain sqrt 2)
        layer = mapping.child(fc)
        pre = x @ (layer.tensor("weight") * layer.attr("weight_gain")).T + layer.tensor("bias") * layer.attr(
            "bias_gain"
        )
        x = torch.nn.functional.leaky_relu(pre, 0.2) * math.sqrt(2)
    with torch.no_grad():
        ws = g.ws(z, 1.0)
    np.testing.assert_allclose(ws[:, 0].numpy(), x.numpy(), rtol=1e-5, atol=1e-5)


def test_a_generator_trained_without_noise_loads_with_none():
    """use_noise=False layers hold no noise_strength or noise_const: they load with zero noise and
    render as the file's own generator with every noise strength set to zero."""
    from nada_train.nvidia_pickle import generator_from_snapshot

    data = snapshot()
    for layer in layers_of(data["G_ema"]):
        if layer.state.get("use_noise"):
            layer.state["use_noise"] = False
            del layer.state["_parameters"]["noise_strength"], layer.state["_buffers"]["noise_const"]
    quiet = generator_from_snapshot(data, "f.pkl")
    noisy = load_generator(DATA / "ada32_clamp.pkl").generator
    state = noisy.state_dict()
    zeroed = [k for k in state if k.endswith(".noise.weight")]
    assert len(zeroed) == 7 and all(state[k].abs().sum() > 0 for k in zeroed)
    noisy.load_state_dict({**state, **{k: torch.zeros_like(state[k]) for k in zeroed}})
    seeds = [0, 1, 2, 3]
    assert np.array_equal(render(quiet, seeds, 1.0), render(noisy, seeds, 1.0))
    assert all(float(v.abs().sum()) == 0 for k, v in quiet.state_dict().items() if "noise" in k)


def test_persistent_objects_read_as_plain_values():
    from nada_train.nvidia_pickle import PersistentObject, _numpy_scalar

    obj = PersistentObject({"class_name": "Layer", "state": {"n": np.int64(3), "gain": np.float32(0.5)}})
    assert obj.module_src == "" and obj.class_name == "Layer"
    assert obj.attr("n") == 3 and type(obj.attr("n")) is int and type(obj.attr("gain")) is float
    assert obj.attr("missing", 5) == 5 and obj.attr("missing") is None
    with pytest.raises(KeyError, match="'conv0'"):
        obj.child("conv0")
    with pytest.raises(KeyError, match="'weight'"):
        obj.tensor("weight")
    assert _numpy_scalar(np.dtype("int64")) == 0  # numpy's scalar() without data: the dtype's zero


def pickled_through(tmp_path, reduce) -> Path:
    """A pickle file of one object whose reduction is `reduce` (a callable and its arguments)."""

    class Reduced:
        def __reduce__(self):
            return reduce

    path = tmp_path / "f.pkl"
    path.write_bytes(pickle.dumps(Reduced()))
    return path


def test_tensors_saved_on_a_gpu_load_on_this_cpu(tmp_path, monkeypatch):
    """A snapshot written on a GPU machine tags each storage cuda:0; read here (no GPU) its tensors
    land on the CPU, whole."""
    import torch.serialization

    from nada_train.nvidia_pickle import read_pickle

    want = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    with monkeypatch.context() as m:
        m.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        blob = pickle.dumps({"w": want})
    assert b"cuda:0" in blob
    path = tmp_path / "gpu.pkl"
    path.write_bytes(blob)
    got = read_pickle(path)["w"]
    assert got.device.type == "cpu" and torch.equal(got, want)


def test_a_storage_whose_bytes_would_run_code_is_refused_and_runs_nothing(tmp_path):
    """The storages inside a snapshot are torch.save bytes, a pickle of their own: they go through
    torch's weights-only unpickler, so a payload there runs nothing either."""
    import io

    marker = tmp_path / "ran"
    inner = io.BytesIO()
    torch.save(RunsCode(marker), inner, _use_new_zipfile_serialization=False)
    path = pickled_through(tmp_path, (torch.storage._load_from_bytes, (inner.getvalue(),)))
    with pytest.raises(NadaError, match=r"^generator '.*f.pkl': not a readable NVIDIA pickle \(Weights only"):
        load_generator(path)
    assert not marker.exists()
    torch.load(io.BytesIO(inner.getvalue()), weights_only=False)  # the payload is real
    assert marker.exists()


def test_unreadable_pickles_get_whole_one_line_messages(tmp_path):
    from collections import OrderedDict

    from nada_train.nvidia_pickle import read_pickle

    tf = tmp_path / "tf.pkl"
    tf.write_bytes(b"\x80\x02cdnnlib.tflib.network\nNetwork\nq\x00)\x81q\x01.")
    with pytest.raises(NadaError) as e:
        read_pickle(tf)
    assert str(e.value) == (
        f"generator '{tf}': a TensorFlow-era StyleGAN pickle (dnnlib.tflib.network.Network); convert it with "
        "stylegan2-ada-pytorch's legacy.py (or rosinality's convert_weight.py) first"
    )
    path = pickled_through(tmp_path, (os.getcwd, ()))
    with pytest.raises(NadaError) as e:
        read_pickle(path)
    assert str(e.value) == (
        f"generator '{path}': the pickle asks for posix.getcwd, which NVIDIA's generator files do not hold; "
        "refused without running anything"
    )
    # an allowed name called wrongly: the reader's own message, whitespace folded and cut to 120 chars
    path = pickled_through(tmp_path, (np.dtype, ("no such\n type " * 20,)))
    with pytest.raises(TypeError) as numpy_says:
        np.dtype("no such\n type " * 20)
    detail = " ".join(str(numpy_says.value).split())[:120]
    assert len(detail) == 120
    with pytest.raises(NadaError) as e:
        read_pickle(path)
    assert (
        str(e.value) == f"generator '{path}': not a readable NVIDIA pickle ({detail}); is the file complete?"
    )
    path = pickled_through(tmp_path, (np.core.multiarray._reconstruct, (OrderedDict, (0,), b"b")))
    with pytest.raises(NadaError, match=r"\(numpy _reconstruct of <class 'collections.OrderedDict'>\)"):
        read_pickle(path)
