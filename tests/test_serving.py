"""A real tritonserver (bundled in nvidia-pytriton) on free 127.0.0.1 ports, serving a base and two
adapted generators; gRPC answers compared with nada-generate."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from PIL import Image

from nada_core.errors import NadaError
from nada_core.seeds import z_batch
from nada_export.pipeline import export
from nada_serve.client import GeneratorClient
from nada_serve.server import TritonServer
from nada_train.checkpoints import load_generator
from nada_train.generator.inference import render
from tests.conftest import served, wait_for

MAX_BATCH = 4
SG3 = Path(__file__).parent / "data" / "nvidia" / "sg3t16.pkl"  # a StyleGAN3 (config T) base beside them


@pytest.fixture(scope="module")
def repo(tmp_path_factory, three_generators):
    path = tmp_path_factory.mktemp("serve") / "repo"
    export([str(p) for p in three_generators] + [str(SG3)], path, max_batch=MAX_BATCH, progress=False)
    return path


@pytest.fixture(scope="module")
def server(repo):
    with served(repo) as s:
        yield s


def test_all_models_ready_and_one_shared_mapping(server):
    names = sorted(m["name"] for m in server.models())
    # one per base: the StyleGAN2 and the StyleGAN3
    assert len([n for n in names if n.startswith("mapping_")]) == 2
    assert {
        "base",
        "sketch",
        "neon",
        "base_synthesis",
        "sketch_synthesis",
        "neon_synthesis",
        "sg3t16",
    } <= set(names)


def test_a_stylegan3_base_is_served_as_nada_generate_renders_it(server):
    got = GeneratorClient(server.endpoints.grpc, "sg3t16").generate_seeds([0, 1, 2, 3, 5], 0.7)
    want = render(load_generator(SG3).generator, [0, 1, 2, 3, 5], 0.7)
    assert got.shape == want.shape == (5, 16, 16, 3)
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1


def test_grpc_images_equal_local_rendering(server, three_generators):
    seeds = [0, 1, 2, 3, 4, 9]  # more than max_batch: split into requests
    for path, name in zip(three_generators, ("base", "sketch", "neon")):
        got = GeneratorClient(server.endpoints.grpc, name).generate_seeds(seeds, 0.7)
        want = render(load_generator(path).generator, seeds, 0.7)
        assert got.shape == want.shape == (6, 32, 32, 3)
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 1, name
    a = GeneratorClient(server.endpoints.grpc, "base").generate_seeds([0], 0.7)
    b = GeneratorClient(server.endpoints.grpc, "sketch").generate_seeds([0], 0.7)
    assert np.abs(a.astype(int) - b.astype(int)).max() > 10  # domains really differ


def test_shared_memory_images_equal_the_grpc_clients(server):
    """The server writes the images into a registered system shared-memory region (same host)."""
    seeds = [0, 1, 2, 3, 4, 9]  # two requests: the region is reused
    plain = GeneratorClient(server.endpoints.grpc, "sketch").generate_seeds(seeds, 0.7)
    with GeneratorClient(server.endpoints.grpc, "sketch", shared_memory=True) as client:
        name = client.shared.name
        assert name in str(client.client.get_system_shared_memory_status(as_json=True))
        shared = client.generate_seeds(seeds, 0.7)
        ws = np.random.RandomState(0).randn(2, 8, 32).astype(np.float32) * 0.3
    np.testing.assert_array_equal(shared, plain)
    status = GeneratorClient(server.endpoints.grpc, "sketch").client.get_system_shared_memory_status(
        as_json=True
    )
    assert name not in str(status)  # unregistered on close
    with GeneratorClient(server.endpoints.grpc, "sketch_synthesis", shared_memory=True) as client:
        via_shm = client.synthesize(ws)
    np.testing.assert_array_equal(
        via_shm, GeneratorClient(server.endpoints.grpc, "sketch_synthesis").synthesize(ws)
    )


def test_synthesis_model_takes_ws(server, three_generators):
    g = load_generator(three_generators[1]).generator
    import torch

    ws = g.broadcast(g.mapping(torch.from_numpy(z_batch([3, 4], 32)))).detach().numpy()
    got = GeneratorClient(server.endpoints.grpc, "sketch_synthesis").synthesize(ws)
    from nada_train.images import to_uint8

    want = to_uint8(g.synthesis(torch.from_numpy(ws))).numpy()
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1


def infer(server, model, arrays: dict):
    client = grpcclient.InferenceServerClient(server.endpoints.grpc)
    inputs = []
    for name, a in arrays.items():
        x = grpcclient.InferInput(
            name, list(a.shape), {np.float32: "FP32", np.float64: "FP64", np.uint8: "UINT8"}[a.dtype.type]
        )
        x.set_data_from_numpy(a)
        inputs.append(x)
    return client.infer(model, inputs)


GOOD = {"z": z_batch([1], 32), "truncation": np.ones((1, 1), np.float32)}


SHAPE_NOTE = r"\. NOTE: Setting a non-zero max_batch_size"  # what Triton adds after a shape it refuses


@pytest.mark.parametrize(
    "model,arrays,status,message",
    [
        (
            "base",
            {"z": z_batch([1], 32).astype(np.float64), "truncation": np.ones((1, 1), np.float32)},
            "INVALID_ARGUMENT",
            r"inference input 'z' data-type is 'FP64', but model 'base' expects 'FP32'$",
        ),
        (
            "base",
            {"z": np.zeros((1, 31), np.float32), "truncation": np.ones((1, 1), np.float32)},
            "INVALID_ARGUMENT",
            r"unexpected shape for input 'z' for model 'base'\. Expected \[-1,32\], got \[1,31\]"
            + SHAPE_NOTE,
        ),
        (
            "base",
            {
                "z": z_batch(list(range(MAX_BATCH + 1)), 32),
                "truncation": np.ones((MAX_BATCH + 1, 1), np.float32),
            },
            "INVALID_ARGUMENT",
            rf"inference request batch-size must be <= {MAX_BATCH} for 'base'$",
        ),
        ("no_such_model", GOOD, "NOT_FOUND", r"^Request for unknown model: 'no_such_model' is not found$"),
        (
            "base",
            {"z": np.full((1, 32), np.nan, np.float32), "truncation": np.ones((1, 1), np.float32)},
            "INTERNAL",
            r"^in ensemble 'base', input 'z' contains NaN or infinity$",
        ),
        (
            "base",
            {"z": z_batch([1], 32), "truncation": np.full((1, 1), np.nan, np.float32)},
            "INTERNAL",
            r"^in ensemble 'base', input 'truncation' contains NaN or infinity$",
        ),
        (
            "sketch_synthesis",
            {"ws": np.full((1, 8, 32), np.nan, np.float32)},
            "INTERNAL",
            r"^input 'ws' contains NaN or infinity$",
        ),
        (
            "sketch_synthesis",
            {"ws": np.zeros((1, 7, 32), np.float32)},
            "INVALID_ARGUMENT",
            r"unexpected shape for input 'ws' for model 'sketch_synthesis'\. Expected \[-1,8,32\], got "
            r"\[1,7,32\]" + SHAPE_NOTE,
        ),
        (
            "base",
            {"z": np.zeros((1, 8 * 2**20), np.float32), "truncation": np.ones((1, 1), np.float32)},  # 32 MiB
            "INVALID_ARGUMENT",
            r"unexpected shape for input 'z' for model 'base'\. Expected \[-1,32\], got \[1,8388608\]"
            + SHAPE_NOTE,
        ),
    ],
)
def test_bad_requests_get_errors_and_server_keeps_serving(server, model, arrays, status, message):
    """Each refusal with its gRPC status and Triton's (or the python model's) own words; then a good
    request is still answered."""
    import re

    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException) as info:
        infer(server, model, arrays)
    assert info.value.status() == f"StatusCode.{status}" and re.search(message, info.value.message()), str(
        info.value
    )
    assert infer(server, "base", GOOD).as_numpy("image").shape == (1, 32, 32, 3)


def test_model_control_is_not_reachable_by_clients(server):
    """Loading, unloading and the repository index answer only the token nada-serve holds: a client
    over gRPC or HTTP is refused and the model stays ready."""
    import tritonclient.http as httpclient

    grpc, http = (
        grpcclient.InferenceServerClient(server.endpoints.grpc),
        httpclient.InferenceServerClient(server.endpoints.http),
    )
    for client in (grpc, http):
        for call in (
            lambda: client.unload_model("neon"),  # noqa: B023
            lambda: client.load_model("neon"),  # noqa: B023
            client.get_model_repository_index,
        ):
            with pytest.raises(Exception, match="restricted, expecting header"):
                call()
    assert grpc.is_model_ready("neon") and http.is_model_ready("neon_synthesis")
    assert (
        len(grpc.get_model_repository_index(headers=server.control_headers).models)
        == len(server.models())
        > 3
    )


def test_client_errors_are_one_line(server):
    """An unknown model: one line naming the model, the server and what the server said."""
    import re

    url = server.endpoints.grpc
    with pytest.raises(NadaError) as info:
        GeneratorClient(url, "no_such")
    assert re.fullmatch(
        rf"--model no_such at {re.escape(url)}: Request for unknown model: 'no_such' is not found",
        info.value.for_command_line(),
    )


def cli(module, *args, **kw):
    code = f"import sys; from {module} import main_entry; sys.argv[0]='x'; main_entry()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300, **kw
    )


@pytest.mark.parametrize("transfer", [["--concurrency", "2", "--batch", "2"], ["--shared-memory"]])
def test_nada_client_pngs_equal_nada_generate_pngs(server, three_generators, tmp_path, transfer):
    r = cli(
        "nada_serve.cli.client",
        "--url",
        server.endpoints.grpc,
        "--model",
        "sketch",
        "--seeds",
        "0-2,7",
        "--truncation",
        "0.7",
        "--out",
        str(tmp_path / "served"),
        *transfer,
    )
    assert r.returncode == 0, r.stderr
    r = cli(
        "nada_train.cli.generate",
        str(three_generators[1]),
        "--seeds",
        "0-2,7",
        "--truncation",
        "0.7",
        "--out",
        str(tmp_path / "local"),
    )
    assert r.returncode == 0, r.stderr
    for name in ("seed0000.png", "seed0001.png", "seed0002.png", "seed0007.png"):
        a = np.asarray(Image.open(tmp_path / "served" / name)).astype(int)
        b = np.asarray(Image.open(tmp_path / "local" / name)).astype(int)
        assert np.abs(a - b).max() <= 1, name


def processes_mentioning(text: str) -> set[int]:
    """Live processes whose command line contains text (from /proc)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                status = (entry / "status").read_text()
            except OSError:
                continue
            if text in cmdline and "\nState:\tZ" not in status:
                found.add(int(entry.name))
    return found


def nada_serve_process(repo: Path, *flags: str) -> subprocess.Popen:
    """nada-serve on `repo` (any free ports) as its console script runs it, its output piped."""
    code = "import sys; from nada_serve.cli.serve import main_entry; sys.argv[0]='nada-serve'; main_entry()"
    ports = ["--grpc-port", "0", "--http-port", "0", "--metrics-port", "0"]
    return subprocess.Popen(
        [sys.executable, "-c", code, str(repo), *ports, *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_nada_serve_cli_ready_then_sigterm(repo):
    already = processes_mentioning(str(repo))  # the module's own server serves this repository too
    proc = nada_serve_process(repo)
    try:
        ready = proc.stdout.readline()
        assert ready.startswith("ready: grpc 127.0.0.1:"), ready + proc.stderr.read()
        models = proc.stdout.readline()
        assert "sketch" in models and "mapping_" in models
        url = ready.split()[2]
        assert GeneratorClient(url, "neon").generate_seeds([5], 1.0).shape == (1, 32, 32, 3)
        server_pids = processes_mentioning(str(repo)) - already - {proc.pid}
        assert server_pids  # tritonserver and its python-backend stubs
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        assert "stopped" in proc.stdout.read()
        wait_for(
            lambda: not processes_mentioning(str(repo)) & server_pids, 10, "nothing left behind", poll=0.1
        )
    finally:
        if proc.poll() is None:
            proc.kill()


def test_nada_serve_reports_model_load_failure(tmp_path, repo):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(repo, broken)
    for f in (broken / "base_synthesis" / "1").glob("*.onnx"):
        f.write_bytes(b"not an onnx model")
    t0 = time.time()
    r = cli(
        "nada_serve.cli.serve",
        str(broken),
        "--grpc-port",
        "0",
        "--http-port",
        "0",
        "--metrics-port",
        "0",
        "--timeout",
        "120",
    )
    assert r.returncode == 2, r.stdout
    first = r.stderr.strip().splitlines()[0]
    assert first.startswith("nada-serve: error: tritonserver exited with status 1 while loading")
    assert first.endswith("; it could not load base_synthesis: export it again, or remove its folder:")
    assert time.time() - t0 < 110


@pytest.fixture(scope="module")
def patient_server(tmp_path_factory, three_generators):
    """neon alone, behind a dynamic batcher that waits up to 20 s to fill a batch of 4: a full batch
    goes at once, so the wait costs nothing unless the machine is slow to send the four."""
    from nada_export.triton_repo import ServeOptions

    path = tmp_path_factory.mktemp("patient") / "repo"
    export(
        [str(three_generators[2])],
        path,
        names=["neon"],
        max_batch=MAX_BATCH,
        serve=ServeOptions(queue_delay_us=20_000_000),
        progress=False,
    )
    with served(path) as s:
        yield s


def test_bad_request_batched_with_good_ones_fails_alone(patient_server, three_generators):
    """Four requests at once to one synthesis model, one of them NaN: the dynamic batcher hands them
    to the python model as one batch of 4 (the server's batch statistics say so); the NaN request
    gets its error, every good request its own correct image."""
    import threading

    import torch

    from nada_train.images import to_uint8

    g = load_generator(three_generators[2]).generator
    with torch.no_grad():
        ws = g.ws(torch.from_numpy(z_batch([0, 1, 2], 32))).numpy()
    want = to_uint8(g.synthesis(torch.from_numpy(ws))).numpy()
    bad = np.full((1, g.n_latent, 32), np.nan, np.float32)
    client = grpcclient.InferenceServerClient(patient_server.endpoints.grpc)

    def executions_of_full_batches():
        stats = client.get_inference_statistics("neon_synthesis", as_json=True)["model_stats"][0]
        return sum(
            int(b["compute_infer"].get("count", 0))
            for b in stats.get("batch_stats", [])
            if int(b["batch_size"]) == MAX_BATCH
        )

    before, results, done = executions_of_full_batches(), {}, threading.Event()

    def callback(i):
        def on_result(result, error):
            results[i] = (result, error)
            if len(results) == MAX_BATCH:
                done.set()

        return on_result

    for i, a in enumerate([ws[0:1], bad, ws[1:2], ws[2:3]]):
        x = grpcclient.InferInput("ws", list(a.shape), "FP32")
        x.set_data_from_numpy(a)
        client.async_infer("neon_synthesis", [x], callback(i))
    assert done.wait(60)
    # Triton may record the statistics just after sending the responses
    wait_for(lambda: executions_of_full_batches() != before, 10, "the batch statistics")
    assert executions_of_full_batches() == before + 1  # the four, executed together
    assert results[1][0] is None and "input 'ws' contains NaN" in str(results[1][1])
    for i, row in ((0, 0), (2, 1), (3, 2)):
        result, error = results[i]
        assert error is None, error
        assert np.abs(result.as_numpy("image")[0].astype(int) - want[row].astype(int)).max() <= 1


def without_torch(command: str, prog: str) -> str:
    """python -c code running a console script where torch, open_clip and onnxruntime cannot be imported."""
    return (
        "import sys; sys.modules['torch'] = sys.modules['open_clip'] = sys.modules['onnxruntime'] = None; "
        f"from nada_core.entry_points import {command}; sys.argv[0] = '{prog}'; {command}()"
    )


def test_nada_client_works_where_torch_cannot_be_imported(server, three_generators, tmp_path):
    """A client machine: `import torch` fails there, and nada-client's help and a request for images
    still work, equal to nada-generate's; nada-train says which extra it needs."""
    client = without_torch("client", "nada-client")
    r = subprocess.run([sys.executable, "-c", client, "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "--model" in r.stdout, r.stderr
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            client,
            "--url",
            server.endpoints.grpc,
            "--model",
            "neon",
            "--seeds",
            "3,4",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    want = render(load_generator(three_generators[2]).generator, [3, 4], 1.0)
    for i, seed in enumerate((3, 4)):
        got = np.asarray(Image.open(tmp_path / f"seed{seed:04d}.png")).astype(int)
        assert np.abs(got - want[i].astype(int)).max() <= 1
    r = subprocess.run(
        [sys.executable, "-c", without_torch("train", "nada-train"), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (
        r.returncode == 2
        and "install it with: pip install 'nada[train]'" in r.stderr
        and "Traceback" not in r.stderr
    )
    # the Python API on the same machine: `import nada` and nada.Client, torch still impossible
    api = (
        "import sys; sys.modules['torch'] = sys.modules['open_clip'] = sys.modules['onnxruntime'] = None\n"
        "import numpy as np, nada\n"
        f"with nada.Client('{server.endpoints.grpc}', 'neon') as c:\n"
        f"    np.save(r'{tmp_path / 'api.npy'}', c.generate_seeds([3, 4]))\n"
    )
    r = subprocess.run([sys.executable, "-c", api], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert np.abs(np.load(tmp_path / "api.npy").astype(int) - want.astype(int)).max() <= 1


def test_nada_serve_listens_on_loopback_unless_told_and_warns_when_told(tmp_path):
    def addresses(server):
        return [
            a
            for a in server.command()
            if a.startswith(("--grpc-address", "--http-address", "--metrics-address"))
        ]

    assert addresses(TritonServer(tmp_path)) == [
        "--grpc-address=127.0.0.1",
        "--http-address=127.0.0.1",
        "--metrics-address=127.0.0.1",
    ]
    assert addresses(TritonServer(tmp_path, host="0.0.0.0")) == [
        "--grpc-address=0.0.0.0",
        "--http-address=0.0.0.0",
        "--metrics-address=0.0.0.0",
    ]
    # an empty repository: never ready, but the warning comes first
    r = cli(
        "nada_serve.cli.serve",
        str(tmp_path),
        "--host",
        "0.0.0.0",
        "--grpc-port",
        "0",
        "--http-port",
        "0",
        "--metrics-port",
        "0",
        "--timeout",
        "2",
    )
    assert r.returncode == 2
    assert "warning: --host 0.0.0.0 is not a loopback address" in r.stderr.splitlines()[0]
    r = cli("nada_serve.cli.serve", str(tmp_path), "--host", "no-such-host.invalid")
    lines = r.stderr.strip().splitlines()
    assert (
        r.returncode == 2
        and len(lines) == 1
        and "nada-serve: error: --host no-such-host.invalid: cannot listen there" in lines[0]
    )


ECHO_CONFIG = """backend: "python"
max_batch_size: 0
input [{ name: "X" data_type: TYPE_FP32 dims: [1] }]
output [{ name: "Y" data_type: TYPE_FP32 dims: [1] }]
instance_group [{ kind: KIND_CPU count: 1 }]
"""
ECHO_MODEL = """import triton_python_backend_utils as pb


class TritonPythonModel:
    def execute(self, requests):
        take = pb.get_input_tensor_by_name
        return [pb.InferenceResponse([pb.Tensor("Y", take(r, "X").as_numpy())]) for r in requests]
"""
# what Triton refuses to load (a broken export, one too large for the GPU): its initialize raises
UNLOADABLE_MODEL = (
    ECHO_MODEL + "\n    def initialize(self, args):\n        raise RuntimeError('no memory for it')\n"
)


def echo_input(value: float = 7.0) -> grpcclient.InferInput:
    x = grpcclient.InferInput("X", [1], "FP32")
    x.set_data_from_numpy(np.array([value], np.float32))
    return x


def test_a_picked_port_taken_before_the_server_binds_it_is_picked_anew(tmp_path, monkeypatch):
    """Another process may take a port between our pick and the server's bind (CI saw an HTTP port
    taken so, and nada-serve refused to start): before the first ready the server starts again on new
    ports. A port the caller asked for is never changed: taken, it is refused at the first try."""
    import socket

    echo_repository(tmp_path, {"echo": ECHO_MODEL})
    tries = []
    start_once = TritonServer._start_once
    monkeypatch.setattr(TritonServer, "_start_once", lambda s, *a: tries.append(s.ports) or start_once(s, *a))

    server = TritonServer(tmp_path)
    picked = server.ports
    with socket.socket() as grpc, socket.socket() as http:
        grpc.bind(("127.0.0.1", picked[0]))
        grpc.listen()
        with server:
            assert [m["state"] for m in server.models()] == ["READY"]
        assert tries[0] == picked and len(tries) == 2 and picked[0] not in tries[1]

        tries.clear()
        http.bind(("127.0.0.1", picked[1]))
        http.listen()
        with pytest.raises(NadaError, match=rf"(?s)exited with status 1 .*:{picked[1]}' already in use"):
            TritonServer(tmp_path, 0, picked[1]).start(timeout=60)
        assert len(tries) == 1


def test_picked_ports_lie_below_the_range_the_kernel_hands_to_connections(tmp_path, monkeypatch):
    """A port from bind(0) is an ephemeral one, which any process's next outgoing connection may take
    before the server binds it: ours come from below that range, unless the range leaves no room."""
    from nada_serve import server as module

    low, high = module.ephemeral_ports()
    picked = [module.free_port() for _ in range(20)]
    assert all(module.LOWEST_PICKED_PORT <= port < low for port in picked) and len(set(picked)) > 10
    (tmp_path / "range").write_text("1024\t65000\n")
    monkeypatch.setattr(module, "EPHEMERAL_RANGE_FILE", tmp_path / "range")
    assert module.ephemeral_ports() == (1024, 65000) and low <= module.free_port() <= high


def echo_repository(folder: Path, models: dict[str, str]) -> Path:
    """A repository of one-input python models, each model.py as given."""
    for name, code in models.items():
        (folder / name / "1").mkdir(parents=True, exist_ok=True)
        (folder / name / "config.pbtxt").write_text(ECHO_CONFIG)
        (folder / name / "1" / "model.py").write_text(code)
    return folder


ECHO_ENSEMBLE = """platform: "ensemble"
max_batch_size: 0
input [{ name: "X" data_type: TYPE_FP32 dims: [1] }]
output [{ name: "Y" data_type: TYPE_FP32 dims: [1] }]
ensemble_scheduling { step [{ model_name: "echo" model_version: -1
  input_map { key: "X" value: "X" } output_map { key: "Y" value: "Y" } }] }
"""


def test_a_later_export_that_triton_refuses_leaves_the_rest_serving(tmp_path, monkeypatch):
    """A model a later export changed or added that Triton refuses to load (broken, or too large for the
    GPU) is said once in the log and not tried again until its files change: the version loaded before
    keeps serving (Triton keeps it), a new one is not served, and the watch goes on, where it used to
    retry for five minutes and then give up, stopping every model. A server that dies then is started
    again without the refused model and the ensemble that uses it (with them it would exit: the old
    version is no longer on disk), and the export that mends the model brings both back."""
    from nada_serve import supervisor as module
    from nada_serve.supervisor import Supervisor

    monkeypatch.setattr(module, "CHANGED_LOAD_RETRY_S", 0.0)  # one try each
    repo = echo_repository(tmp_path / "repo", {"echo": ECHO_MODEL})
    (repo / "pipe" / "1").mkdir(parents=True)
    (repo / "pipe" / "config.pbtxt").write_text(ECHO_ENSEMBLE)
    logged = []
    server = TritonServer(repo).start()
    try:
        watch = Supervisor(server, log=logged.append, start_timeout=60)
        watch.check()  # the first look: what is served
        echo_repository(repo, {"echo": UNLOADABLE_MODEL, "added": UNLOADABLE_MODEL})
        watch.check()
        client = grpcclient.InferenceServerClient(server.endpoints.grpc)
        x = echo_input()
        assert client.infer("echo", [x]).as_numpy("Y").tolist() == [7.0]  # the version loaded before
        states = {m["name"]: m.get("state") for m in server.models()}
        assert states == {"echo": "READY", "pipe": "READY", "added": "UNAVAILABLE"}
        assert len(logged) == 2 and all(
            "could not be loaded in 0 s" in line and "no memory for it" in line for line in logged
        )
        assert "added: could not" in logged[0] and logged[0].endswith(
            "; not served until an export changes it again"
        )
        assert (
            "echo: could not" in logged[1] and "; the version loaded before keeps serving until" in logged[1]
        )

        watch.check()
        assert len(logged) == 2  # not tried again
        echo_repository(repo, {"added": ECHO_MODEL + "# mended\n"})
        watch.check()
        assert len(logged) == 3 and "added: a new export changed it in the repository; loaded in" in logged[2]
        assert client.infer("added", [x]).as_numpy("Y").tolist() == [7.0]

        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait()
        watch.check()
        assert (
            "tritonserver: exited with status -9; restarted on the same ports without echo, pipe" in logged[3]
        )
        states = {m["name"]: m.get("state") for m in server.models()}
        assert states == {"added": "READY", "echo": None, "pipe": None}
        client = grpcclient.InferenceServerClient(server.endpoints.grpc)
        assert client.infer("added", [x]).as_numpy("Y").tolist() == [7.0]
        watch.check()
        assert len(logged) == 4  # nothing tried while nothing changed
        echo_repository(repo, {"echo": ECHO_MODEL + "# mended\n"})
        watch.check()
        assert "echo: a new export changed it in the repository; loaded in" in logged[4]
        assert "pipe: left out when the server started; loaded in" in logged[5]
        assert client.infer("pipe", [x]).as_numpy("Y").tolist() == [7.0]
        assert {m["name"]: m.get("state") for m in server.models()} == dict.fromkeys(states, "READY")
    finally:  # killed: Triton waits its 10 s exit timeout for the refused version, which never unloads
        server.process.kill()
        server.stop()


def test_nada_serve_skip_unloadable_serves_the_rest_names_what_it_left_out_and_loads_it_mended(tmp_path):
    """nada-serve --skip-unloadable on a repository holding a model tritonserver cannot load and an
    ensemble over it: it serves the rest, names both and Triton's reason (without the flag it refuses
    to start, as above), and the export that mends the model brings both back."""
    repo = echo_repository(tmp_path / "repo", {"echo": ECHO_MODEL, "bad": UNLOADABLE_MODEL})
    (repo / "pipe" / "1").mkdir(parents=True)
    (repo / "pipe" / "config.pbtxt").write_text(ECHO_ENSEMBLE.replace('"echo"', '"bad"'))
    proc = nada_serve_process(repo, "--skip-unloadable")
    try:
        ready = proc.stdout.readline()
        assert ready.startswith("ready: grpc 127.0.0.1:"), ready + proc.stderr.read()
        assert proc.stdout.readline() == "models: echo\n"
        assert proc.stdout.readline() == "not served: bad, pipe\n"
        client = grpcclient.InferenceServerClient(ready.split()[2])
        x = echo_input()
        assert client.infer("echo", [x]).as_numpy("Y").tolist() == [7.0]

        def answers(model: str) -> bool:
            try:
                return client.infer(model, [x]).as_numpy("Y").tolist() == [7.0]
            except Exception:  # restarting, or not loaded yet
                return False

        # a crash: started again without them (with them tritonserver would exit again)
        (server_pid,) = processes_mentioning(f"--model-repository={repo.resolve()}")
        os.kill(server_pid, signal.SIGKILL)
        wait_for(lambda: server_pid not in processes_mentioning(str(repo.resolve())), 10, "the server gone")
        wait_for(lambda: answers("echo"), 120, "the server started again, serving echo")

        echo_repository(repo, {"bad": ECHO_MODEL + "# mended\n"})
        wait_for(lambda: client.is_model_ready("pipe"), 60, "the mended model and its ensemble loaded")
        assert client.infer("pipe", [x]).as_numpy("Y").tolist() == [7.0]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        said = proc.stderr.read()
        assert (
            "bad: tritonserver could not load it (Internal: RuntimeError: no memory for it); starting without "
            "it and the ensembles that use it, until an export changes it" in said
        )
        assert "tritonserver: exited with status -9; restarted on the same ports without bad, pipe" in said
        assert said.count("bad: tritonserver could not load it") == 1  # the restart left it out at once
        assert "bad: a new export changed it in the repository; loaded in" in said
        assert "pipe: left out when the server started; loaded in" in said
    finally:
        if proc.poll() is None:
            proc.kill()
