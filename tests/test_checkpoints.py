import pickle
import re

import pytest
import torch

from nada_core.errors import NadaError
from nada_train.checkpoints import load_generator, save_rosinality, save_safetensors
from tests.conftest import refused, tiny_generator


def images(g, seed=0):
    z = torch.randn(3, g.config.style_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return g(z, truncation=0.7)


def test_rosinality_roundtrip_keeps_images_and_latent_avg(rosinality_ckpt):
    loaded = load_generator(rosinality_ckpt)
    raw = torch.load(rosinality_ckpt, weights_only=True)
    assert torch.equal(loaded.generator.w_avg, raw["latent_avg"])
    assert loaded.kind == "rosinality" and len(loaded.sha256) == 64
    ref = tiny_generator()
    ref.set_w_avg(raw["latent_avg"])
    assert torch.equal(images(loaded.generator), images(ref))


def test_safetensors_roundtrip(tmp_path):
    g = tiny_generator(3)
    g.set_w_avg(torch.randn(32))
    save_safetensors(g, tmp_path / "g.safetensors")
    back = load_generator(tmp_path / "g.safetensors").generator
    assert back.config == g.config
    assert torch.equal(images(back), images(g))
    save_rosinality(back, tmp_path / "again.pt")
    assert torch.equal(images(load_generator(tmp_path / "again.pt").generator), images(g))


def test_safetensors_keep_what_the_tensors_cannot_say(tmp_path):
    """lr_mlp and the blur kernel leave no trace in the tensor shapes: the metadata carries them."""
    from nada_core.fileio import sha256_file
    from nada_train.generator import Generator, GeneratorConfig

    config = GeneratorConfig(
        size=16, style_dim=8, n_mlp=2, channels=(8, 6, 4), lr_mlp=0.05, blur_kernel=(1, 2, 1)
    )
    torch.manual_seed(0)
    g = Generator(config).eval()
    g.set_w_avg(torch.randn(8))
    path = tmp_path / "g.safetensors"
    save_safetensors(g, path)
    loaded = load_generator(path)
    assert loaded.generator.config == config
    assert (loaded.kind, loaded.source, loaded.sha256, loaded.base) == (
        "safetensors",
        str(path),
        sha256_file(path),
        None,
    )
    assert torch.equal(images(loaded.generator), images(g))


def test_run_directory_loads_its_generator_and_base(tmp_path):
    import json

    from nada_core.fileio import sha256_file

    g = tiny_generator(4)
    g.set_w_avg(torch.randn(32))
    save_safetensors(g, tmp_path / "generator.safetensors")
    base = {"path": "/bases/ffhq.pt", "sha256": "ab" * 32, "kind": "rosinality"}
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "nada-run/1", "base": base}))
    loaded = load_generator(tmp_path)
    assert (loaded.kind, loaded.source, loaded.base) == ("run", str(tmp_path), base)
    assert loaded.sha256 == sha256_file(tmp_path / "generator.safetensors")
    assert torch.equal(images(loaded.generator), images(g))
    (tmp_path / "manifest.json").unlink()
    with pytest.raises(NadaError, match="needs generator.safetensors and manifest.json"):
        load_generator(tmp_path)


def test_plain_state_dict_without_latent_avg_uses_mean_of_mapped_z(tmp_path):
    g = tiny_generator()
    torch.save(g.state_dict(), tmp_path / "sd.pt")
    loaded = load_generator(tmp_path / "sd.pt").generator
    z = torch.randn(4096, 32, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(loaded.w_avg, g.mapping(z).mean(0).detach(), atol=1e-5)


class Payload:
    """Unpickled, it creates the file `marker` (a stand-in for any code a checkpoint could run)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


class ShellPayload(Payload):
    """os.system: a module torch's unpickler blocks outright (its refusal reads differently)."""

    def __reduce__(self):
        import os

        return (os.system, (f"touch '{self.marker}'",))


@pytest.mark.parametrize("payload", [Payload, ShellPayload])
def test_pickle_with_code_is_refused_and_its_code_never_runs(tmp_path, payload):
    path, marker = tmp_path / "evil.pt", tmp_path / "the-payload-ran"
    torch.save({"g_ema": tiny_generator().state_dict(), "extra": payload(marker)}, path)
    with refused(
        f"^generator '{re.escape(str(path))}': the file holds Python objects beyond tensors and would run "
        "code when loaded; refused. Pass --allow-pickle only if you trust the file$"
    ):
        load_generator(path)
    assert not marker.exists()
    torch.load(path, weights_only=False)  # what an unrestricted load does: the check above can fail
    assert marker.exists()


def test_a_pkl_without_nvidias_generator_is_refused(tmp_path):
    path = tmp_path / "network.pkl"
    path.write_bytes(pickle.dumps({"G_ema": 1}))
    with pytest.raises(NadaError, match="G_ema is 1, not one of NVIDIA's Generator networks"):
        load_generator(path)


@pytest.mark.parametrize(
    "content,match",
    [
        (b"hello, not a checkpoint", "not a readable torch checkpoint"),
        (None, "no such file"),
    ],
)
def test_unreadable_inputs(tmp_path, content, match):
    path = tmp_path / "x.pt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(NadaError, match=match):
        load_generator(path)


def test_checkpoint_without_generator(tmp_path):
    torch.save({"d": {"w": torch.zeros(1)}}, tmp_path / "d.pt")
    with pytest.raises(NadaError, match="no 'g_ema'"):
        load_generator(tmp_path / "d.pt")


def test_inconsistent_tensor_shapes(tmp_path):
    sd = tiny_generator().state_dict()
    sd["convs.1.conv.modulation.weight"] = torch.zeros(7, 32)
    torch.save({"g_ema": sd}, tmp_path / "bad.pt")
    with pytest.raises(NadaError, match="do not fit"):
        load_generator(tmp_path / "bad.pt")


def test_run_directory_needs_its_files(tmp_path):
    with pytest.raises(NadaError, match="needs generator.safetensors"):
        load_generator(tmp_path)


def test_rosinality_format_refuses_what_it_cannot_record(tmp_path):
    from nada_train.generator import Generator, GeneratorConfig

    g = Generator(GeneratorConfig(size=8, style_dim=8, n_mlp=1, channels=(8, 8), lr_mlp=1.0))
    with pytest.raises(NadaError, match="cannot record lr_mlp=1.0"):
        save_rosinality(g, tmp_path / "g.pt")
    assert not (tmp_path / "g.pt").exists()


def test_safetensors_without_nada_metadata_and_broken_ones(tmp_path):
    """A plain state dict in safetensors (someone else's tool) loads with the architecture read off
    the tensors; ours say what they are; a broken file or wrong tensors name the file."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    g = tiny_generator(5)
    save_file({k: v.contiguous() for k, v in g.state_dict().items()}, str(tmp_path / "plain.safetensors"))
    assert load_generator(tmp_path / "plain.safetensors").generator.config == g.config
    save_safetensors(g, tmp_path / "ours.safetensors")
    with safe_open(str(tmp_path / "ours.safetensors"), "pt") as f:
        assert f.metadata()["format"] == "nada-stylegan2"
    (tmp_path / "broken.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(
        NadaError, match=r"^generator '.*broken\.safetensors': not a readable safetensors file"
    ):
        load_generator(tmp_path / "broken.safetensors")
    sd = {k: v.contiguous() for k, v in g.state_dict().items()}
    sd["convs.1.conv.modulation.weight"] = torch.zeros(7, 32)
    save_file(sd, str(tmp_path / "wrong.safetensors"))
    with pytest.raises(NadaError, match="wrong.safetensors': tensors do not fit"):
        load_generator(tmp_path / "wrong.safetensors")


def test_random_generator_is_config_f_drawn_from_seed_0():
    from nada_train.checkpoints import random_generator
    from nada_train.generator import Generator, GeneratorConfig

    g = random_generator(8)
    assert g.config == GeneratorConfig.rosinality(8, 512, 8, 2) and g.w_avg_known
    torch.manual_seed(0)
    want = Generator(GeneratorConfig.rosinality(8, 512, 8, 2)).state_dict()
    assert all(torch.equal(v, want[k]) for k, v in g.state_dict().items())


@pytest.mark.parametrize("spec", ["random:16:8", "random:abc", "random:12", "random:"])
def test_a_bad_random_spec_is_one_line(spec):
    from nada_train.checkpoints import load_generator

    with pytest.raises(
        NadaError, match=f"generator '{spec}': write random:SIZE with SIZE a power of two >= 8"
    ):
        load_generator(spec)


def test_a_loaded_generator_draws_seeds_codes_and_images_as_nada_generate(rosinality_ckpt):
    """The API's generator: generate (truncation 1 by default) is nada-generate's render, ws are the
    mapping's truncated codes, synthesize(ws) draws the same images, and errors name the field."""
    import numpy as np

    from nada_core.seeds import z_batch
    from nada_train.generator.inference import render

    loaded = load_generator(rosinality_ckpt)
    g = loaded.generator
    assert np.array_equal(loaded.generate("0-2"), render(g, [0, 1, 2], 1.0))
    assert np.array_equal(loaded.generate(range(3), truncation=0.7), render(g, [0, 1, 2], 0.7))
    ws = loaded.ws([0, 1, 2], truncation=0.7)
    with torch.no_grad():
        want = g.ws(torch.from_numpy(z_batch([0, 1, 2], g.config.z_dim)), 0.7)
    assert ws.shape == (3, g.n_latent, g.config.style_dim) and torch.equal(ws, want)
    assert np.array_equal(loaded.synthesize(ws), loaded.generate(range(3), truncation=0.7))
    assert not np.array_equal(loaded.synthesize(ws, noise="none"), loaded.synthesize(ws))
    with refused(rf"--ws of shape \[3, 32\]: give W\+ codes \[N, {g.n_latent}, 32\]"):
        loaded.synthesize(ws[:, 0])
    with refused("--noise fresh: choose const, random or none"):
        loaded.synthesize(ws, noise="fresh")
    with refused(r"^--seeds is empty; give at least one seed, e.g. \[0, 1, 2\]$"):
        loaded.generate([])
    moved = loaded.to("cpu", "fp32")
    assert moved.generator is not g and moved.rendering == "fp32" and moved.source == loaded.source
    assert np.array_equal(moved.generate([4]), loaded.generate(4))


def test_random_generators_are_config_f_shaped_and_a_folder_that_is_no_run_is_refused(tmp_path):
    from nada_train.generator import GeneratorConfig

    assert load_generator("random:16").generator.config == GeneratorConfig.rosinality(16, 512, 8, 2)
    (tmp_path / "manifest.json").write_text("{}")
    with pytest.raises(NadaError) as caught:
        load_generator(tmp_path)
    assert str(caught.value) == (
        f"run directory '{tmp_path}': needs generator.safetensors and manifest.json; is it a finished or "
        "saved nada-train run?"
    )


class Harmless:
    """An object a trusted checkpoint may carry beside its tensors (training options, say)."""

    def __init__(self, note: str = "lr 0.002"):
        self.note = note


def on_a_gpu(monkeypatch):
    """torch.save as on a GPU machine: every storage tagged cuda:0."""
    import torch.serialization

    monkeypatch.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")


def test_checkpoints_written_on_a_gpu_load_here_and_a_trusted_pickle_with_allow_pickle(tmp_path, monkeypatch):
    g = tiny_generator(5)
    g.set_w_avg(torch.randn(32))
    with monkeypatch.context() as m:
        on_a_gpu(m)
        torch.save({"g_ema": g.state_dict(), "latent_avg": g.w_avg}, tmp_path / "plain.pt")
        torch.save({"g_ema": g.state_dict(), "latent_avg": g.w_avg, "opts": Harmless()}, tmp_path / "obj.pt")
    assert b"cuda:0" in (tmp_path / "plain.pt").read_bytes()
    with refused("obj.pt': the file holds Python objects beyond tensors"):
        load_generator(tmp_path / "obj.pt")
    for name, allow in (("plain.pt", False), ("obj.pt", True)):
        loaded = load_generator(tmp_path / name, allow_pickle=allow)
        assert loaded.generator.w_avg.device.type == "cpu" and loaded.source == str(tmp_path / name)
        assert torch.equal(images(loaded.generator), images(g)), name


def test_a_torch_file_that_is_damaged_is_not_called_code(tmp_path):
    """torch's weights-only unpickler refuses a damaged file too; only a class or function it will
    not build means code (--allow-pickle would not mend a damaged file: it is not offered)."""
    cases = {
        b"x": "not a readable torch checkpoint (Unsupported operand 120)",
        b"hello, not a checkpoint": "not a readable torch checkpoint (KeyError: 101)",
    }
    for i, (content, message) in enumerate(cases.items()):
        path = tmp_path / f"{i}.pt"
        path.write_bytes(content)
        with pytest.raises(NadaError) as e:
            load_generator(path)
        assert str(e.value) == f"generator '{path}': {message}"
    torch.save({"g_ema": tiny_generator().state_dict()}, tmp_path / "whole.pt")
    whole = (tmp_path / "whole.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(NadaError) as e:
        load_generator(tmp_path / "cut.pt")
    head = f"generator '{tmp_path / 'cut.pt'}': not a readable torch checkpoint ("
    message = str(e.value)
    detail = message[len(head) : -1]  # the exception's name and its first line, cut to 200 characters
    assert (
        message.startswith(head)
        and detail.startswith("RuntimeError: PytorchStreamReader")
        and len(detail) == 200
    )


def test_whole_lines_for_torch_files_that_hold_no_generator(tmp_path):
    sd = tiny_generator().state_dict()
    files = {
        "list.pt": ([1, 2], "expected a dict with 'g_ema', got list"),
        "keys.pt": (
            {f"k{i}": torch.zeros(1) for i in range(8)},
            "no 'g_ema' generator in the checkpoint (keys: k0, k1, k2, k3, k4, k5); is it a rosinality-format "
            "StyleGAN2 checkpoint?",
        ),
        "extra.pt": (
            {"g_ema": {**sd, "extra.weight": torch.zeros(2)}},
            "tensors do not fit a stylegan2 generator of size 32 (Error(s) in loading state_dict for Generator: "
            'Unexpected key(s) in state_dict: "extra.weight".)',
        ),
        "shapes.pt": (
            {"g_ema": {**sd, "convs.1.conv.modulation.weight": torch.zeros(7, 32)}},
            "tensors do not fit a stylegan2 generator of size 32 (Error(s) in loading state_dict for Generator: "
            "size mismatch for convs.1.conv.modulation.weight: copying a param with shape torch.Size([7, 32]) "
            "from checkpoint, the shape in current model is torch.Size([24, 32]).)",
        ),
    }
    for name, (content, message) in files.items():
        torch.save(content, tmp_path / name)
        with pytest.raises(NadaError) as e:
            load_generator(tmp_path / name)
        assert str(e.value) == f"generator '{tmp_path / name}': {message}", name
    missing = tmp_path / "nothere.txt"
    with pytest.raises(NadaError) as e:
        load_generator(missing)
    assert str(e.value) == (
        f"generator '{missing}': no such file or directory; pass a rosinality .pt checkpoint, an NVIDIA .pkl, "
        "a .safetensors file or a nada-train run directory"
    )


def test_a_plain_state_dict_keeps_its_own_latent_avg(tmp_path):
    g = tiny_generator(2)
    w_avg = torch.randn(32)
    torch.save({**g.state_dict(), "latent_avg": w_avg}, tmp_path / "plain.pt")
    assert torch.equal(load_generator(tmp_path / "plain.pt").generator.w_avg, w_avg)


def test_what_a_loaded_generator_says_it_is(tmp_path):
    """source and kind for each way in; the random warning points at the caller's line."""
    from tests.test_nvidia_pickle import DATA

    pkl = DATA / "ada32_clamp.pkl"
    loaded = load_generator(pkl)
    assert (loaded.source, loaded.kind) == (str(pkl), "nvidia")
    with pytest.warns(UserWarning) as caught:
        loaded = load_generator("random:8")
    (w,) = [w for w in caught if "RANDOM" in str(w.message)]
    assert str(w.message) == "random:8: generator with RANDOM weights (benchmarks/smoke tests only)"
    assert w.filename == __file__  # stacklevel 2: the user's call, not nada's code
    assert (loaded.source, loaded.kind, loaded.sha256) == ("random:8", "random", None)
    from nada_train.bases import default_base

    base = default_base()
    world = load_generator(f"builtin:{base.name}")
    assert world.source == str(base.generator) and world.kind != "random"


def test_loaded_generator_defaults_and_inputs(rosinality_ckpt):
    import numpy as np

    from nada_train.checkpoints import random_generator
    from nada_train.generator import GeneratorConfig

    loaded = load_generator(rosinality_ckpt)
    assert torch.equal(loaded.ws([0, 1]), loaded.ws([0, 1], truncation=1.0))
    assert not torch.equal(loaded.ws([0, 1]), loaded.ws([0, 1], truncation=0.5))
    ws = loaded.ws([0, 1], truncation=0.7)
    with refused(rf"--ws of shape \[2, {loaded.generator.n_latent}, 33\]"):
        loaded.synthesize(torch.zeros(2, loaded.generator.n_latent, 33))
    assert np.array_equal(loaded.synthesize(ws.double()), loaded.synthesize(ws))  # float64 codes: cast
    copy = loaded.to()  # the defaults: auto, fp32
    assert copy.rendering == "fp32" and np.array_equal(copy.generate([0, 1]), loaded.generate([0, 1]))
    with torch.no_grad():
        for p in copy.generator.parameters():
            p.add_(1.0)
    assert not np.array_equal(copy.generate([0]), loaded.generate([0]))  # a copy: the loaded one kept
    assert random_generator(16).config == GeneratorConfig.rosinality(16, 512, 8, 2)  # config-f by default


def test_a_disk_error_while_saving_is_an_oserror_naming_the_file(tmp_path, monkeypatch):
    """safetensors reports an I/O failure as its own error ending '(os error N)': saving turns it into
    OSError(N, strerror(N), path) (a full disk: errno 28), nothing left behind; other errors pass as
    they are."""
    import errno
    import os

    import nada_train.tensor_files as ckpt  # where every safetensors write goes through save_file

    def full_disk(*a, **k):
        raise RuntimeError(
            "Error while serializing: IoError(Os { code: 28, kind: StorageFull }) (os error 28)"
        )

    monkeypatch.setattr(ckpt, "save_file", full_disk)
    path = tmp_path / "g.safetensors"
    with pytest.raises(OSError) as e:
        save_safetensors(tiny_generator(), path)
    assert (e.value.errno, e.value.strerror, e.value.filename) == (errno.ENOSPC, os.strerror(28), str(path))
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(ckpt, "save_file", lambda *a, **k: (_ for _ in ()).throw(ValueError("bad dtype")))
    with pytest.raises(ValueError, match="bad dtype"):
        save_safetensors(tiny_generator(), path)


def test_what_rosinalitys_format_cannot_hold_is_refused_whole(tmp_path):
    from dataclasses import replace

    from nada_train.generator import Generator
    from tests.test_stylegan3 import sg3

    with pytest.raises(NadaError) as e:
        save_rosinality(sg3(), tmp_path / "g.pt")
    assert str(e.value) == (
        f"{tmp_path / 'g.pt'}: rosinality's format holds StyleGAN2 generators only; save this stylegan3 "
        "generator as .safetensors"
    )
    clamped = Generator(replace(tiny_generator().config, conv_clamp=256.0))
    with pytest.raises(NadaError) as e:
        save_rosinality(clamped, tmp_path / "g.pt")
    assert str(e.value) == (
        f"{tmp_path / 'g.pt'}: rosinality's format cannot record lr_mlp=0.01, blur kernel [1, 3, 3, 1], z width "
        "32, mapping width None, conv_clamp 256.0 (its loader assumes 0.01, [1, 3, 3, 1], one width for z and w, "
        "no clamp); save as .safetensors instead"
    )
    assert not (tmp_path / "g.pt").exists()


def test_each_kind_of_base_says_where_it_came_from(tmp_path):
    """The source and kind a LoadedGenerator records, for a built-in base, an NVIDIA pickle and an
    encoder's checkpoint without a latent average (its decoder's w_avg is then the mean of mapped z)."""
    from pathlib import Path

    from nada_train.bases import named_base
    from nada_train.checkpoints import random_generator

    world = load_generator("builtin:world")
    assert world.source == str(named_base("builtin:world").generator) and world.kind == "safetensors"
    pkl = Path(__file__).parent / "data" / "nvidia" / "ada32_clamp.pkl"
    loaded = load_generator(pkl)
    assert (loaded.source, loaded.kind) == (str(pkl), "nvidia")
    g = tiny_generator()
    torch.save(
        {"state_dict": {f"decoder.{k}": v for k, v in g.state_dict().items()}, "opts": {}}, tmp_path / "e.pt"
    )
    decoder = load_generator(tmp_path / "e.pt")
    assert decoder.kind == "rosinality" and decoder.generator.w_avg_known
    assert random_generator(16).config == random_generator(16, channel_multiplier=2).config  # config-f widths
