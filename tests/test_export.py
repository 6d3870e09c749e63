import json
import shutil

import numpy as np
import pytest
import torch
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from nada_core.errors import NadaError
from nada_export import onnx_export, parity
from nada_export.graphs import SynthesisGraph
from nada_export.onnx_export import export_verified, onnx_session
from nada_export.pipeline import export
from nada_export.tensorrt_engine import tensorrt_missing_reason
from nada_export.triton_repo import ServeOptions
from nada_train.images import to_uint8
from tests.conftest import refused, tiny_generator


def parse_config(path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    g = tiny_generator()
    g.set_w_avg(torch.randn(32) * 0.1)
    folder = tmp_path_factory.mktemp("onnx")
    parities = {k: export_verified(g, k, folder / f"{k}.onnx", max_batch=5) for k in ("mapping", "synthesis")}
    return g, folder, parities


@pytest.mark.parametrize("batch", [1, 3, 5])
def test_onnx_synthesis_matches_torch_at_batch(exported, batch):
    g, folder, _ = exported
    session = onnx_session(folder / "synthesis.onnx")
    ws = g.broadcast(g.mapping(torch.randn(batch, 32))).detach() + 0.1 * torch.randn(batch, g.n_latent, 32)
    got = session.run(None, {"ws": ws.numpy()})[0]
    with torch.no_grad():
        want = to_uint8(g.synthesis(ws)).numpy()
    assert got.shape == (batch, 32, 32, 3) and got.dtype == np.uint8
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1


@pytest.mark.parametrize("batch", [1, 3, 5])
def test_onnx_mapping_applies_truncation_at_batch(exported, batch):
    g, folder, parities = exported
    session = onnx_session(folder / "mapping.onnx")
    z = torch.randn(batch, 32)
    t = torch.linspace(0, 1, batch)[:, None]  # psi 0 first: the average
    ws = session.run(None, {"z": z.numpy(), "truncation": t.numpy()})[0]
    assert ws.shape == (batch, g.n_latent, 32)
    want = g.truncate(g.mapping(z), t).detach().numpy()
    for code in range(g.n_latent):
        np.testing.assert_allclose(ws[:, code], want, atol=1e-5)
    np.testing.assert_allclose(ws[0, 5], g.w_avg.numpy(), atol=1e-5)
    assert all(p.passed and p.batches == [1, 3, 5] for p in parities.values())


def test_onnx_graph_has_no_random_ops_and_opset(exported):
    import onnx

    _, folder, _ = exported
    model = onnx.load(str(folder / "synthesis.onnx"))
    ops = {n.op_type for n in model.graph.node}
    assert not ops & {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike"}
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # symbolic batch


def shift_outputs(monkeypatch, pixels: int = 0, ws: float = 0.0):
    """Exported models whose outputs are off: images by `pixels` levels, ws by `ws`."""
    real = onnx_export.onnx_session

    def shifted(path, threads=0):
        session = real(path, threads)

        class Shifted:
            def run(self, names, feed):
                out = session.run(names, feed)[0]
                if out.dtype == np.uint8:
                    return [np.clip(out.astype(int) + pixels, 0, 255).astype(np.uint8)]
                return [out + np.float32(ws)]

        return Shifted()

    monkeypatch.setattr(onnx_export, "onnx_session", shifted)


@pytest.mark.parametrize("pixels,refused", [(1, False), (3, True)])
def test_synthesis_off_by_more_than_one_level_is_refused(tmp_path, monkeypatch, pixels, refused):
    shift_outputs(monkeypatch, pixels=pixels)
    if not refused:
        assert (
            export_verified(
                tiny_generator(size=8), "synthesis", tmp_path / "s.onnx", max_batch=2
            ).max_abs_error
            == pixels
        )
        return
    with pytest.raises(
        NadaError,
        match=r"does not match PyTorch \(synthesis: batches \[1, 2\], max abs error 3.*limit: 1 level",
    ):
        export_verified(tiny_generator(size=8), "synthesis", tmp_path / "s.onnx", max_batch=2)
    assert not (tmp_path / "s.onnx").exists()


@pytest.mark.parametrize("offset,refused", [(5e-4, False), (2e-3, True)])
def test_mapping_off_by_more_than_the_ws_limit_is_refused(tmp_path, monkeypatch, offset, refused):
    shift_outputs(monkeypatch, ws=offset)
    if not refused:
        parity = export_verified(tiny_generator(), "mapping", tmp_path / "m.onnx", max_batch=2)
        assert parity.passed and parity.max_abs_error == pytest.approx(offset, rel=0.01)
        return
    with pytest.raises(
        NadaError, match=r"mapping: batches \[1, 2\], max abs error 0.002.*limit: 0.001 for ws"
    ):
        export_verified(tiny_generator(), "mapping", tmp_path / "m.onnx", max_batch=2)
    assert not (tmp_path / "m.onnx").exists()


def test_psnr_against_hand_computation():
    a = np.zeros((2, 4, 4, 3), np.uint8)
    b = a.copy()
    b[0, 0, 0, 0] = 10  # one error of 10 among 96 values: MSE 100/96
    assert parity.psnr(a, b, 255.0) == pytest.approx(10 * np.log10(255**2 * 96 / 100))
    assert parity.psnr(a, a, 255.0) == float("inf")


def test_reduced_precision_gate_is_psnr_not_the_worst_pixel():
    """An fp16 engine: a few pixels several levels off pass (PSNR >= 40 dB), noise everywhere fails;
    the same few pixels fail the fp32 gate (1 level)."""
    from nada_export.graphs import SynthesisGraph

    g = tiny_generator()
    graph = SynthesisGraph(g)

    def engine(noise_levels: float, every: int):
        def run(feed):
            with torch.no_grad():
                out = np.ascontiguousarray(graph(torch.from_numpy(feed["ws"])).numpy(), dtype=int)
            out.reshape(-1)[::every] += int(noise_levels)
            return np.clip(out, 0, 255).astype(np.uint8)

        return run

    few = parity.check_parity(g, "synthesis", engine(4, every=97), [1, 2], precision="fp16")
    assert few.passed and few.max_abs_error == 4 and few.psnr_db > 40
    assert not parity.check_parity(g, "synthesis", engine(4, every=97), [1, 2], precision="fp32").passed
    noisy = parity.check_parity(g, "synthesis", engine(3, every=1), [1, 2], precision="fp16")
    assert not noisy.passed and noisy.psnr_db < 40


def test_a_model_exactly_at_a_limit_passes(monkeypatch):
    """The limits are inclusive: an error equal to MAX_WS_ERROR, or a PSNR equal to MIN_PSNR_DB,
    passes; a hair beyond fails."""
    from nada_export.graphs import MappingGraph

    g = tiny_generator(size=8)
    mapping, synthesis = MappingGraph(g), SynthesisGraph(g)

    def off_ws(feed):
        z, truncation = (torch.from_numpy(feed[n]) for n in ("z", "truncation"))
        with torch.no_grad():
            return mapping(z, truncation).numpy() + np.float32(3e-4)

    def off_pixels(feed):
        with torch.no_grad():
            out = np.ascontiguousarray(synthesis(torch.from_numpy(feed["ws"])).numpy(), dtype=int)
        out.reshape(-1)[::5] += 2
        return np.clip(out, 0, 255).astype(np.uint8)

    err = parity.check_parity(g, "mapping", off_ws, [1, 2]).max_abs_error
    for limit, passed in ((err, True), (np.nextafter(err, 0), False)):
        monkeypatch.setattr(parity, "MAX_WS_ERROR", float(limit))
        assert parity.check_parity(g, "mapping", off_ws, [1, 2]).passed is passed
    db = parity.check_parity(g, "synthesis", off_pixels, [1, 2], precision="fp16").psnr_db
    for limit, passed in ((db, True), (np.nextafter(db, np.inf), False)):
        monkeypatch.setattr(parity, "MIN_PSNR_DB", float(limit))
        assert parity.check_parity(g, "synthesis", off_pixels, [1, 2], precision="fp16").passed is passed


def test_repository_with_base_and_two_adapted_shares_one_mapping(tmp_path, three_generators):
    repo = tmp_path / "repo"
    report = export([str(p) for p in three_generators], repo, max_batch=4, progress=False)
    assert report.models == ["base", "sketch", "neon"]
    folders = sorted(p.name for p in repo.iterdir() if p.is_dir())
    mappings = [f for f in folders if f.startswith("mapping_")]
    assert len(mappings) == 1
    assert set(folders) == set(mappings) | {
        "base",
        "base_synthesis",
        "sketch",
        "sketch_synthesis",
        "neon",
        "neon_synthesis",
    }
    mapping = parse_config(repo / mappings[0] / "config.pbtxt")
    assert mapping.backend == "python" and mapping.max_batch_size == 4
    assert [(i.name, list(i.dims), i.data_type) for i in mapping.input] == [
        ("z", [32], model_config_pb2.TYPE_FP32),
        ("truncation", [1], model_config_pb2.TYPE_FP32),
    ]
    synth = parse_config(repo / "sketch_synthesis" / "config.pbtxt")
    assert [(i.name, list(i.dims)) for i in synth.input] == [("ws", [8, 32])]
    assert (synth.output[0].name, list(synth.output[0].dims), synth.output[0].data_type) == (
        "image",
        [32, 32, 3],
        model_config_pb2.TYPE_UINT8,
    )
    assert (
        synth.HasField("dynamic_batching")
        and synth.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    )
    assert synth.parameters["runtime"].string_value == "onnxruntime"
    assert (repo / "sketch_synthesis" / "1" / "model.py").exists()
    assert (repo / "sketch_synthesis" / "1" / synth.parameters["model_file"].string_value).exists()
    ens = parse_config(repo / "neon" / "config.pbtxt")
    assert ens.platform == "ensemble"
    steps = [s.model_name for s in ens.ensemble_scheduling.step]
    assert steps == [mappings[0], "neon_synthesis"]
    manifest = json.loads((repo / "manifest.json").read_text())
    assert manifest["models"]["sketch"]["mapping"] == mappings[0]
    assert "sketch" in (repo / "README.md").read_text()


def test_native_backend_configs(tmp_path, three_generators):
    repo = tmp_path / "repo"
    export(
        [str(three_generators[0])],
        repo,
        max_batch=2,
        serve=ServeOptions(backend="native", instance_count=2),
        progress=False,
    )
    cfg = parse_config(repo / "base_synthesis" / "config.pbtxt")
    assert cfg.platform == "onnxruntime_onnx" and cfg.default_model_filename == "model.onnx"
    assert (
        cfg.instance_group[0].count == 2
        and cfg.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    )
    assert (repo / "base_synthesis" / "1" / "model.onnx").exists()
    assert not (repo / "base_synthesis" / "1" / "model.py").exists()


def test_failed_export_leaves_repository_as_it_was(tmp_path, three_generators, monkeypatch, base_repository):
    repo = tmp_path / "repo"
    shutil.copytree(base_repository, repo)
    before = {p.relative_to(repo): p.read_bytes() for p in repo.rglob("*") if p.is_file()}

    def boom(*a, **k):
        raise NadaError("parity failed (simulated)")

    monkeypatch.setattr("nada_export.engines.export_verified", boom)
    with pytest.raises(NadaError, match="simulated"):
        export([str(three_generators[1])], repo, max_batch=2, progress=False)
    after = {p.relative_to(repo): p.read_bytes() for p in repo.rglob("*") if p.is_file()}
    assert after == before
    assert [p.name for p in tmp_path.iterdir()] == ["repo"]  # no staging left behind


def test_second_export_adds_to_repository(tmp_path, three_generators, base_repository):
    """A second export adds its models: the first export's models stay byte for byte, and the new
    generator, of the same base, shares the first one's mapping model."""
    from tests.test_faults import tree_digest

    repo = tmp_path / "repo"
    shutil.copytree(base_repository, repo)
    first = {name: tree_digest(repo / name) for name in ("base", "base_synthesis")}
    export([str(three_generators[1])], repo, max_batch=2, progress=False)
    assert {name: tree_digest(repo / name) for name in first} == first
    manifest = json.loads((repo / "manifest.json").read_text())
    assert set(manifest["models"]) == {"base", "sketch"}
    mappings = [p.name for p in repo.iterdir() if p.name.startswith("mapping_")]
    assert (
        len(mappings) == 1
        and manifest["models"]["base"]["mapping"] == manifest["models"]["sketch"]["mapping"] == mappings[0]
    )
    steps = [s.model_name for s in parse_config(repo / "sketch" / "config.pbtxt").ensemble_scheduling.step]
    assert steps == [mappings[0], "sketch_synthesis"]
    assert {m["name"] for m in manifest["model_specs"]} == {
        mappings[0],
        "base",
        "base_synthesis",
        "sketch",
        "sketch_synthesis",
    }


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(engine="tensorrt"), "--engine tensorrt"),
        (dict(precision="fp16"), "--engine onnx builds fp32; fp16 is built by --engine trt or aoti"),
        (dict(max_batch=0), "--max-batch 0"),
        (dict(names=["a", "b"]), "one name per checkpoint"),
        (dict(names=["Bad Name"]), "--name 'Bad Name'"),
    ],
)
def test_bad_export_options(tmp_path, three_generators, kw, match):
    from nada_export.cli.export import FLAGS

    with refused(match, FLAGS):
        export([str(three_generators[0])], tmp_path / "repo", progress=False, **kw)
    assert not (tmp_path / "repo").exists()


def test_duplicate_names_refused(tmp_path, three_generators):
    from nada_export.cli.export import FLAGS

    with refused("give each a --name", FLAGS):
        export([str(three_generators[0])] * 2, tmp_path / "repo", progress=False)


TRT_REASON = tensorrt_missing_reason()


@pytest.mark.skipif(
    TRT_REASON is None, reason="TensorRT is present: the missing-TensorRT message is not reachable"
)
def test_trt_engine_without_tensorrt_fails_clearly(tmp_path, three_generators):
    """The whole message: TensorRT missing (what it is and how to get it), or present without a GPU."""
    import re

    want = TRT_REASON if TRT_REASON.startswith("TensorRT is not installed") else f"--engine trt: {TRT_REASON}"
    with pytest.raises(NadaError, match=f"^{re.escape(want)}$"):
        export([str(three_generators[0])], tmp_path / "repo", engine="trt", progress=False)
    assert not (tmp_path / "repo").exists()


@pytest.mark.skipif(
    TRT_REASON is not None, reason=f"TensorRT engine build needs TensorRT and a GPU: {TRT_REASON}"
)
def test_trt_engine_build_and_parity(tmp_path, three_generators):
    report = export(
        [str(three_generators[0])],
        tmp_path / "repo",
        engine="trt",
        precision="fp16",
        max_batch=4,
        progress=False,
    )
    assert all(f.parity.passed and f.path.endswith(".plan") for f in report.files)


class FakeBackendUtils:
    """The parts of Triton's triton_python_backend_utils that model.py calls, as plain objects: the
    python model's own batching and refusal code runs for real on them."""

    class Tensor:
        def __init__(self, name, array):
            self.name, self.array = name, array

        def as_numpy(self):
            return self.array

    class TritonError:
        def __init__(self, message):
            self.message = message

    class InferenceResponse:
        def __init__(self, output_tensors, error=None):
            self.output_tensors, self.error = output_tensors, error

    @staticmethod
    def get_input_tensor_by_name(request, name):
        return FakeBackendUtils.Tensor(name, request[name])


def test_python_model_refuses_bad_requests_in_a_dynamic_batch_and_answers_the_rest(exported, monkeypatch):
    """One execute() call with the requests Triton's dynamic batcher merged: the NaN and infinite
    ones get errors, the good ones are run together once and each gets its own rows."""
    import importlib
    import sys

    g, folder, _ = exported
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", FakeBackendUtils)
    module = importlib.import_module("nada_serve.triton_python_model")
    monkeypatch.delitem(sys.modules, "nada_serve.triton_python_model")  # the fake stays in this test
    model = module.TritonPythonModel()
    config = {
        "parameters": {
            "model_file": {"string_value": "synthesis.onnx"},
            "runtime": {"string_value": "onnxruntime"},
        },
        "input": [{"name": "ws"}],
        "output": [{"name": "image"}],
    }
    model.initialize(
        {
            "model_config": json.dumps(config),
            "model_repository": str(folder.parent),
            "model_version": folder.name,
        }
    )
    calls = []
    real_run = model.run
    model.run = lambda feed: calls.append(len(feed["ws"])) or real_run(feed)

    rng = np.random.default_rng(0)
    good = [rng.normal(size=(n, g.n_latent, 32)).astype(np.float32) for n in (1, 2, 1)]
    nan, inf = good[0].copy(), good[0].copy()
    nan[0, 3, 5], inf[0, 0, 0] = np.nan, np.inf
    requests = [{"ws": good[0]}, {"ws": nan}, {"ws": good[1]}, {"ws": inf}, {"ws": good[2]}]
    responses = model.execute(requests)

    assert calls == [4]  # the three good requests, four rows, in one run
    assert [r.error is not None for r in responses] == [False, True, False, True, False]
    assert all("input 'ws' contains NaN or infinity" in responses[i].error.message for i in (1, 3))
    for response, ws in zip([responses[0], responses[2], responses[4]], good):
        want = to_uint8(g.synthesis(torch.from_numpy(ws))).numpy()
        got = response.output_tensors[0].as_numpy()
        assert response.output_tensors[0].name == "image" and got.shape == want.shape
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 1


def test_parity_report_and_limits():
    from nada_export.parity import Parity, parity_batches, parity_limit

    assert (
        Parity("synthesis", [1, 3], 0.0, float("inf"), 0.1).describe()
        == "synthesis: batches [1, 3], max abs error 0, PSNR inf dB"
    )
    assert (
        Parity("mapping", [1], 4.5e-6, 87.123, 0.1).describe()
        == "mapping: batches [1], max abs error 4.5e-06, PSNR 87.1 dB"
    )
    assert parity_limit("mapping") == "limit: 0.001 for ws"
    assert parity_limit("synthesis") == "limit: 1 level"
    assert parity_limit("synthesis", "fp16") == "limit: PSNR 40.0 dB at fp16"
    assert (
        parity_batches(8) == [1, 3, 8]
        and parity_batches(3) == [1, 3]
        and parity_batches(2) == [1, 2]
        and parity_batches(1) == [1]
    )


def test_parity_measures_on_fresh_inputs_per_batch():
    """The mapping's PSNR is taken against the largest |w| of each batch's own fresh inputs (seeds
    1000, 1001, ...: not the inputs the graph was traced with); a wrong shape is an error."""
    from nada_export.graphs import MappingGraph, example_inputs

    g = tiny_generator()
    graph = MappingGraph(g)
    offset = np.float32(2e-4)

    def shifted(feed):
        with torch.no_grad():
            return graph(torch.from_numpy(feed["z"]), torch.from_numpy(feed["truncation"])).numpy() + offset

    p = parity.check_parity(g, "mapping", shifted, [1, 4])
    peaks = []
    for i, b in enumerate([1, 4]):
        x = example_inputs(g, "mapping", b, seed=1000 + i)
        with torch.no_grad():
            peaks.append(float(np.abs(graph(x["z"], x["truncation"]).numpy()).max()))
    assert p.passed and p.max_abs_error == pytest.approx(2e-4, rel=1e-3)
    assert p.psnr_db == pytest.approx(min(20 * np.log10(peak / 2e-4) for peak in peaks), rel=1e-3)
    assert 0 <= p.seconds < 60
    with pytest.raises(
        NadaError, match=r"mapping: exported model returned shape \(1, 3\) for batch 1, PyTorch \(1, 8, 32\)"
    ):
        parity.check_parity(g, "mapping", lambda feed: np.zeros((1, 3), np.float32), [1])


def test_a_cropped_generator_is_served_at_its_box(tmp_path):
    """The repository's image output is the crop box's shape (the Triton output shape is the crop's)."""
    from nada_train.checkpoints import save_safetensors

    g = tiny_generator(size=8)  # 8 px: the same export, a third of the tracing
    g.set_crop((0, 2, 8, 6))
    save_safetensors(g, tmp_path / "cars.safetensors")
    export([str(tmp_path / "cars.safetensors")], tmp_path / "repo", max_batch=2, progress=False)
    for model in ("cars", "cars_synthesis"):
        cfg = parse_config(tmp_path / "repo" / model / "config.pbtxt")
        assert list(cfg.output[0].dims) == [4, 8, 3], model


def test_a_generator_held_in_memory_is_exported_as_it_is_held(tmp_path):
    """export() takes a LoadedGenerator as it is (a blend, a generator built in a notebook), never
    reloading its source: here no file has its weights, and the graph checked is the one held."""
    from nada_train.checkpoints import LoadedGenerator

    g = tiny_generator(size=8)
    held = LoadedGenerator(g, "made-in-a-notebook", "random", None)
    report = export([held], tmp_path / "repo", names=["mine"], max_batch=2, progress=False)
    assert report.models == ["mine"]
    (graph,) = (tmp_path / "repo" / "mine_synthesis").rglob("*.onnx")
    ws = g.broadcast(g.mapping(torch.randn(2, g.config.z_dim))).detach()
    served = onnx_session(graph).run(None, {"ws": ws.numpy()})[0]
    with torch.no_grad():
        want = to_uint8(g.synthesis(ws)).numpy()
    assert np.abs(served.astype(int) - want.astype(int)).max() <= 1


def test_synthesis_psnr_is_against_255_and_the_default_gate_is_fp32():
    """An engine off by exactly one level everywhere: MSE 1, so PSNR 20 log10(255) = 48.13 dB, and
    it passes the fp32 gate (1 level) that check_parity applies by default; two levels at one pixel
    fail that gate although the PSNR stays high."""
    from nada_export.graphs import SynthesisGraph

    g = tiny_generator()
    graph = SynthesisGraph(g)

    def engine(change):
        def run(feed):
            with torch.no_grad():
                out = np.ascontiguousarray(graph(torch.from_numpy(feed["ws"])).numpy(), dtype=int)
            return change(out).astype(np.uint8)

        return run

    one_level = parity.check_parity(g, "synthesis", engine(lambda x: np.where(x < 255, x + 1, x - 1)), [1, 2])
    assert one_level.passed and one_level.psnr_db == pytest.approx(20 * np.log10(255.0))

    def two_at_one_pixel(x):
        flat = x.reshape(-1)  # a view: x is contiguous
        flat[0] = flat[0] + 2 if flat[0] < 250 else flat[0] - 2
        return x

    spike = parity.check_parity(g, "synthesis", engine(two_at_one_pixel), [1])
    assert not spike.passed and spike.psnr_db > 60


def test_the_psnr_peak_is_255_even_when_no_pixel_reaches_it():
    """A generator whose ToRGB layers output nothing draws a flat mid-grey: no pixel near 255. One
    level off everywhere is still 48.13 dB (peak 255), not the 42 dB a peak read off the image gives."""
    from nada_export.graphs import SynthesisGraph

    g = tiny_generator()
    with torch.no_grad():
        for name, p in g.named_parameters():
            if name.startswith("to_rgb"):
                p.zero_()
    graph = SynthesisGraph(g)

    def one_level_up(feed):
        with torch.no_grad():
            out = graph(torch.from_numpy(feed["ws"])).numpy()
        assert out.max() < 200  # the flat image this test needs
        return out + 1

    p = parity.check_parity(g, "synthesis", one_level_up, [1])
    assert p.passed and p.psnr_db == pytest.approx(20 * np.log10(255.0))


@pytest.mark.parametrize(
    "kind,precision", [("mapping", "fp32"), ("synthesis", "fp32"), ("synthesis", "fp16")]
)
def test_parity_feeds_each_batch_and_at_reduced_precision_every_gate_seed(kind, precision):
    """What check_parity runs the engine on: one fresh feed per batch size; at fp16 or bf16 synthesis
    also each gate seed's ws alone, so a reduced-precision engine is judged on the images the gate
    was set on. The result names its kind and batches."""
    from nada_core.seeds import z_batch
    from nada_export.graphs import GRAPHS
    from nada_train.generator.inference import GATE_SEEDS

    g = tiny_generator()
    cls, input_names, _ = GRAPHS[kind]
    module, calls = cls(g).eval(), []

    def exact(feed):
        calls.append(feed)
        with torch.no_grad():
            return module(*(torch.from_numpy(feed[n]) for n in input_names)).numpy()

    p = parity.check_parity(g, kind, exact, [1, 3], precision)
    assert (p.kind, p.batches, p.passed) == (kind, [1, 3], True)
    assert [sorted(c) for c in calls] == [sorted(input_names)] * len(calls)
    assert [len(c[input_names[0]]) for c in calls[:2]] == [1, 3]
    gate = calls[2:]
    if precision == "fp32":
        assert gate == []
    else:
        with torch.no_grad():
            want = g.ws(torch.from_numpy(z_batch(list(GATE_SEEDS), g.config.z_dim))).numpy()
        assert len(gate) == len(GATE_SEEDS) and all(c["ws"].shape == (1, *want.shape[1:]) for c in gate)
        np.testing.assert_array_equal(np.concatenate([c["ws"] for c in gate]), want)


def test_a_second_generator_of_one_structure_reuses_the_trace_with_its_own_weights(tmp_path, monkeypatch):
    """Every run of one base traces to one graph: the second export puts its weights into the first's
    trace and answers as its own generator does; what changes the graph (a crop, the batch, the kind)
    keys another trace. 8-px generators: the same code paths, a third of the tracing."""
    import copy

    monkeypatch.setattr(onnx_export, "_traces", {})
    monkeypatch.setenv("NADA_CACHE", str(tmp_path / "cache"))  # none from earlier tests
    traces = []
    real = torch.onnx.export
    monkeypatch.setattr(torch.onnx, "export", lambda *a, **kw: traces.append(1) or real(*a, **kw))
    a, b = tiny_generator(seed=1, size=8), tiny_generator(seed=2, size=8)
    assert not onnx_export.export_graph(a, "synthesis", tmp_path / "a.onnx", max_batch=3)
    assert onnx_export.export_graph(b, "synthesis", tmp_path / "b.onnx", max_batch=3)
    assert len(traces) == 1
    ws = 0.3 * torch.randn(2, b.n_latent, b.config.style_dim)
    reused, first = (onnx_session(tmp_path / f"{n}.onnx").run(None, {"ws": ws.numpy()})[0] for n in "ba")
    with torch.no_grad():
        want = onnx_export.export_spec(b, "synthesis", 3)[0](ws).numpy()
    assert (
        np.abs(reused.astype(int) - want.astype(int)).max() <= 1
        and np.abs(first.astype(int) - want.astype(int)).max() > 10
    )
    cropped = copy.deepcopy(b)
    cropped.set_crop((0, 2, 8, 6))

    def key(g, kind="synthesis", max_batch=3):
        return onnx_export.structure_key(onnx_export.export_spec(g, kind, max_batch)[0], kind, max_batch)

    assert key(a) == key(b)
    assert len({key(b), key(cropped), key(b, max_batch=4), key(b, "mapping")}) == 4


def test_a_trace_outlives_its_process_and_a_damaged_one_is_traced_again(tmp_path, monkeypatch):
    """nada-export of a second run of one base, in a new process, reuses the first's trace from
    NADA_CACHE; a file there that is not ONNX is traced over; another torch names another file."""
    monkeypatch.setenv("NADA_CACHE", str(tmp_path / "cache"))
    traces = []
    real = torch.onnx.export
    monkeypatch.setattr(torch.onnx, "export", lambda *a, **kw: traces.append(1) or real(*a, **kw))
    a, b = tiny_generator(seed=1, size=8), tiny_generator(seed=2, size=8)
    monkeypatch.setattr(onnx_export, "_traces", {})
    assert not onnx_export.export_graph(a, "synthesis", tmp_path / "a.onnx", max_batch=2)
    kept = list((tmp_path / "cache" / "onnx-traces").iterdir())
    assert len(kept) == 1
    monkeypatch.setattr(onnx_export, "_traces", {})  # what a new process starts with
    assert onnx_export.export_graph(b, "synthesis", tmp_path / "b.onnx", max_batch=2) and len(traces) == 1
    ws = 0.3 * torch.randn(2, b.n_latent, b.config.style_dim)
    got = onnx_session(tmp_path / "b.onnx").run(None, {"ws": ws.numpy()})[0].astype(int)
    with torch.no_grad():
        want = onnx_export.export_spec(b, "synthesis", 2)[0](ws).numpy().astype(int)
    assert np.abs(got - want).max() <= 1
    kept[0].write_bytes(b"not an ONNX model")
    monkeypatch.setattr(onnx_export, "_traces", {})
    assert not onnx_export.export_graph(b, "synthesis", tmp_path / "c.onnx", max_batch=2) and len(traces) == 2
    import onnx

    onnx.ModelProto.FromString(kept[0].read_bytes())  # traced over: whole again
    key = onnx_export.structure_key(onnx_export.export_spec(b, "synthesis", 2)[0], "synthesis", 2)
    here = onnx_export.trace_file(key)
    monkeypatch.setattr(torch, "__version__", "0.0.1")
    assert here == kept[0] and onnx_export.trace_file(key) != here


def test_a_reused_trace_that_fails_its_parity_is_traced_afresh(tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_export, "_traces", {})
    monkeypatch.setenv("NADA_CACHE", str(tmp_path / "cache"))
    wrong = tiny_generator(seed=3, size=8)
    put_back = onnx_export._save_with_weights
    # the fault: a reuse that puts another generator's weights in
    monkeypatch.setattr(
        onnx_export,
        "_save_with_weights",
        lambda trace, module, path: put_back(trace, SynthesisGraph(wrong), path),
    )
    export_verified(tiny_generator(seed=1, size=8), "synthesis", tmp_path / "a.onnx", max_batch=2)
    assert export_verified(
        tiny_generator(seed=2, size=8), "synthesis", tmp_path / "b.onnx", max_batch=2
    ).passed
