"""nada-export --engine aoti: AOTInductor packages built on this machine's CPU, checked like the ONNX
graphs, served through the Triton python model's aoti runtime: the domain's images as nada-generate
draws them, and the encoder (NAME_edit) as nada-edit draws a photo. Compilation costs about 12 s per
graph here (the authors' 24-unit encoder a minute: a four-unit one stands in): one repository is built
for the module."""

import json

import numpy as np
import pytest
import torch

from nada_core.errors import NadaError
from nada_export.pipeline import export
from nada_export.triton_repo import ServeOptions
from nada_serve.client import GeneratorClient
from nada_train.checkpoints import load_generator, save_safetensors
from nada_train.edit import edit
from nada_train.encoders.loading import load_encoder
from nada_train.generator import Generator, GeneratorConfig
from nada_train.generator.inference import render
from tests.conftest import light_encoder_file, refused, served
from tests.encoder_fixtures import photos
from tests.test_export import parse_config


def small_generator():
    """8 px, two resolutions: compilation time grows with the number of layers (kernels)."""
    g = Generator(GeneratorConfig(size=8, style_dim=16, n_mlp=2, channels=(16, 8), lr_mlp=0.01))
    g.set_w_avg(torch.randn(16, generator=torch.Generator().manual_seed(3)) * 0.1)
    return g


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    path = tmp_path_factory.mktemp("aoti-g") / "sketch.safetensors"
    torch.manual_seed(11)
    save_safetensors(small_generator(), path)
    return path


@pytest.fixture(scope="module")
def encoder_file(tmp_path_factory):
    """The four-unit encoder: this module checks the export and the served graph, not the IR-50."""
    return light_encoder_file(tmp_path_factory.mktemp("encoder"))


@pytest.fixture(scope="module")
def aoti_repo(tmp_path_factory, encoder_file, encoder_runs):
    """One repository for the module: a domain of the encoder's decoder (run "a") and the encoder
    (ReStyle's step unrolled once)."""
    repo = tmp_path_factory.mktemp("aoti") / "repo"
    report = export(
        [encoder_runs[0]],
        repo,
        engine="aoti",
        device="cpu",
        max_batch=2,
        encoder=encoder_file,
        encoder_steps=1,
        progress=False,
        serve=ServeOptions(threads=1),
    )
    return repo, report


@pytest.fixture(scope="module")
def aoti_server(aoti_repo):
    with served(aoti_repo[0]) as server:
        yield server


def test_packages_are_built_checked_and_written(aoti_repo):
    repo, report = aoti_repo
    encoder = json.loads((repo / "manifest.json").read_text())["encoder"]["model"]
    assert sorted(f.model for f in report.files) == sorted(["a_synthesis", encoder, mapping_model(repo)])
    assert all(f.path == f"{f.model}.pt2" for f in report.files)
    assert all(f.parity.passed and f.parity.batches == [1, 2] for f in report.files)
    synthesis = [f for f in report.files if f.model == "a_synthesis"][0]
    assert synthesis.parity.max_abs_error <= 1  # levels, on fresh W+ codes at each batch
    (encoded,) = [f for f in report.files if f.model == encoder]
    assert encoded.parity.max_abs_error < 1e-4  # W+ codes
    for model in ("a_synthesis", encoder):
        cfg = parse_config(repo / model / "config.pbtxt")
        params = {k: v.string_value for k, v in cfg.parameters.items()}
        assert (params["runtime"], params["device"], params["model_file"]) == ("aoti", "cpu", f"{model}.pt2")
        assert cfg.instance_group[0].kind == cfg.instance_group[0].KIND_CPU
        assert (repo / model / "1" / f"{model}.pt2").stat().st_size > 0
    manifest = json.loads((repo / "manifest.json").read_text())
    assert manifest["models"]["a"]["engine"] == "aoti" and manifest["models"]["a"]["device"] == "cpu"


def mapping_model(repo) -> str:
    return json.loads((repo / "manifest.json").read_text())["models"]["a"]["mapping"]


def test_served_aoti_images_equal_nada_generate(aoti_server, encoder_runs):
    with GeneratorClient(aoti_server.endpoints.grpc, "a") as client:
        got = client.generate_seeds([0, 1, 2, 3, 4, 9], 0.7)
    want = render(load_generator(encoder_runs[0]).generator, [0, 1, 2, 3, 4, 9], 0.7)
    assert got.shape == want.shape == (6, 8, 8, 3)
    assert want.std() > 5
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1


def test_the_served_aoti_encoder_draws_photos_as_nada_edit(aoti_server, encoder_file, encoder_runs):
    pictures = photos(3, 90, seed=41)
    with GeneratorClient(aoti_server.endpoints.grpc, "a") as client:
        got = client.edit(pictures)
    drawn = edit(list(pictures), encoder_runs[:1], encoder=load_encoder(encoder_file), encoder_steps=1)
    local = np.stack([e.domains["a"] for e in drawn])
    assert np.abs(got.astype(int) - local.astype(int)).max() <= 1


def test_a_broken_reduced_precision_package_is_refused(tmp_path, small, monkeypatch):
    """The precision gate (PSNR >= 40 dB against fp32) applies to aoti: a bf16 path that also rounds
    its styles to one decimal is refused and its package deleted."""
    from nada_export.engines import build_aoti
    from nada_train.generator.layers import ModulatedConv2d

    reduced = ModulatedConv2d._forward_reduced

    def coarse(self, x, style, weight):
        return reduced(self, x, (style * 10).round() / 10, weight)

    monkeypatch.setattr(ModulatedConv2d, "_forward_reduced", coarse)
    package = tmp_path / "s.pt2"
    g = load_generator(small).generator
    with pytest.raises(
        NadaError, match=r"AOTInductor synthesis package \(cpu, bf16\) does not match PyTorch .*PSNR"
    ):
        build_aoti(g, "synthesis", package.with_suffix(""), max_batch=2, precision="bf16", device="cpu")
    assert not package.exists()


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        (
            dict(engine="onnx", precision="bf16"),
            "--precision bf16: --engine onnx builds fp32; bf16 is built by --engine aoti$",
        ),
        (
            dict(engine="trt", precision="bf16"),
            "--precision bf16: --engine trt builds fp32 or fp16; bf16 is built by --engine aoti$",
        ),
        (
            dict(engine="onnx", precision="fp16"),
            "--precision fp16: --engine onnx builds fp32; fp16 is built by --engine trt or aoti$",
        ),
        (dict(engine="aoti", device="tpu"), "--device tpu: choose auto, cpu or cuda"),
        (
            dict(engine="aoti", serve=ServeOptions(backend="native")),
            r"--engine aoti is served by the python backend \(Triton's native backends do not load .pt2 "
            r"packages\); drop --backend native",
        ),
    ],
)
def test_aoti_options_are_checked_before_any_work(tmp_path, three_generators, kwargs, needle):
    with refused(needle):
        export([str(three_generators[1])], tmp_path / "repo", progress=False, **kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal where no GPU is visible")
def test_cuda_without_a_gpu_is_one_line(tmp_path, three_generators):
    with pytest.raises(NadaError, match="no CUDA GPU is visible"):
        export([str(three_generators[1])], tmp_path / "repo", engine="aoti", device="cuda", progress=False)
