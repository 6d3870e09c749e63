"""Small models the tests build (a 32-px generator, a 3M-parameter open_clip config), one torch
thread per worker, and the tiers' hooks (tests/tiers.py)."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from tests.tiers import under_mutmut


def threads_per_worker() -> int:
    """The cores shared out over the xdist workers (one each on two cores): more threads than cores
    only spin. mutmut forks a process per mutant, and an OpenMP pool made before a fork hangs it."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if under_mutmut():
        return 1
    return max(1, (os.cpu_count() or 1) // workers)


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: a worker per core and one more. With one per core about an eighth of the cores' time
    in the full suite sits idle (tests waiting on a tritonserver, a subprocess, a browser); the extra
    worker fills those gaps: 5 min 50 s against 6 min 18 s on two cores, the same tree. The quick tier
    (`-m "not slow"`) has no such waits, and there one per core is quicker (53 s against 61 s)."""
    cores = os.cpu_count() or 1
    return cores if "not slow" in (config.option.markexpr or "") else cores + 1


THREADS = threads_per_worker()
torch.set_num_threads(THREADS)
# the subprocesses a test starts: nada commands, torchrun, tritonserver
for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[variable] = str(THREADS)
# one cache for the session (ONNX traces, the python backend's stub folder), shared by the workers and
# every subprocess, never the user's: each generator structure is traced once per session
if "PYTEST_XDIST_WORKER" not in os.environ:
    import atexit
    import shutil
    import tempfile

    os.environ["NADA_CACHE"] = tempfile.mkdtemp(prefix="nada-test-cache-")
    atexit.register(shutil.rmtree, os.environ["NADA_CACHE"], ignore_errors=True)

from nada_train.checkpoints import load_generator, save_rosinality  # noqa: E402
from nada_train.clip.compat import import_open_clip  # noqa: E402

import_open_clip()  # seconds of imports, paid at collection rather than by whichever test loads a CLIP first
from tests import tiers  # noqa: E402

# the tiers' hooks (tests/tiers.py), where pytest looks for them
pytest_configure = tiers.pytest_configure
pytest_collection_modifyitems = tiers.pytest_collection_modifyitems
pytest_runtest_protocol = tiers.pytest_runtest_protocol
pytest_runtest_makereport = tiers.pytest_runtest_makereport
pytest_report_header = tiers.pytest_report_header
from nada_train.generator import Generator, GeneratorConfig  # noqa: E402

TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2},
}
TINY_CLIP_NAME = "nada-test-tiny"
OTHER_CLIP = {  # a second, different small CLIP: for runs and losses guided by two models
    "embed_dim": 24,
    "vision_cfg": {"image_size": 24, "layers": 1, "width": 64, "patch_size": 6},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 48, "heads": 4, "layers": 1},
}
OTHER_CLIP_NAME = "nada-test-other"


def wait_for(predicate, timeout: float, what: str, poll: float = 0.05) -> None:
    """Until predicate() holds (a condition, never a fixed sleep); an AssertionError naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(poll)


def relative_step_difference(a: dict, b: dict, start: dict) -> float:
    """|(a - start) - (b - start)| / |a - start| over all tensors: how far two trainings from `start`
    disagree, relative to how far they went. Adam (beta1 0) moves a weight whose gradient is near
    zero by about lr whatever its sign, so another kernel's rounding can flip single weights: an
    elementwise tolerance would have to allow that flip, while the relative difference of the whole
    step stays small (about 1e-4 between kernels) and grows with any real difference in the arithmetic."""
    da = torch.cat([(a[n] - start[n]).flatten() for n in sorted(a)])
    db = torch.cat([(b[n] - start[n]).flatten() for n in sorted(a)])
    return float((da - db).norm() / da.norm().clamp_min(1e-12))


def tiny_config(size: int = 32) -> GeneratorConfig:
    # custom widths (no channel multiplier gives these): the loader must read them off the tensors
    widths = {8: (32, 24), 16: (32, 24, 16), 32: (32, 24, 16, 12), 64: (32, 24, 16, 12, 8)}[size]
    return GeneratorConfig(size=size, style_dim=32, n_mlp=2, channels=widths)


def tiny_generator(seed: int = 0, size: int = 32) -> Generator:
    torch.manual_seed(seed)
    g = Generator(tiny_config(size)).eval()
    with torch.no_grad():  # non-zero noise strengths and biases, so every path is exercised
        for name, p in g.named_parameters():
            if (
                name.endswith("noise.weight")
                or name.endswith("activate.bias")
                or name.endswith("to_rgb1.bias")
            ):
                p.normal_(0, 0.1)
    return g


@pytest.fixture(scope="session")
def clip_config_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("clip_configs")
    (folder / f"{TINY_CLIP_NAME}.json").write_text(json.dumps(TINY_CLIP))
    (folder / f"{OTHER_CLIP_NAME}.json").write_text(json.dumps(OTHER_CLIP))
    os.environ["NADA_CLIP_CONFIG_DIR"] = str(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_clip_spec(clip_config_dir) -> str:
    return f"{TINY_CLIP_NAME}:random"


def write_base_checkpoint(folder: Path, size: int = 32) -> Path:
    """The tests' base: the tiny generator, its latent_avg drawn right after it, as rosinality's .pt."""
    g = tiny_generator(size=size)
    g.set_w_avg(torch.randn(g.config.style_dim) * 0.1)
    path = folder / "base.pt"
    save_rosinality(g, path)
    return path


@pytest.fixture()
def rosinality_ckpt(tmp_path) -> Path:
    return write_base_checkpoint(tmp_path)


def adapted_copy(g: Generator, seed: int) -> Generator:
    """What nada-train changes: synthesis weights; mapping and latent_avg stay the base's."""
    from nada_train.generator import Generator as G

    out = G(g.config)
    out.load_state_dict(g.state_dict())
    out.set_w_avg(g.w_avg.clone())
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in out.named_parameters():
            if name.startswith("convs."):
                p.add_(0.3 * torch.randn(p.shape, generator=gen))
    return out.eval()


@pytest.fixture(scope="session")
def three_generators(tmp_path_factory) -> list[Path]:
    """A base (rosinality .pt) and two adapted generators (nada .safetensors) sharing its mapping."""
    from nada_train.checkpoints import save_safetensors

    folder = tmp_path_factory.mktemp("generators")
    base = tiny_generator()
    base.set_w_avg(torch.randn(32, generator=torch.Generator().manual_seed(5)) * 0.1)
    save_rosinality(base, folder / "base.pt")
    paths = [folder / "base.pt"]
    for i, name in enumerate(("sketch", "neon")):
        save_safetensors(adapted_copy(base, i + 1), folder / f"{name}.safetensors")
        paths.append(folder / f"{name}.safetensors")
    return paths


@pytest.fixture(scope="session")
def base_repository(tmp_path_factory, three_generators) -> Path:
    """The base alone exported once (max batch 2): the repository that export and fault tests copy
    and export into. Never changed in place."""
    from nada_export.pipeline import export

    repo = tmp_path_factory.mktemp("base-repository") / "repo"
    export([str(three_generators[0])], repo, max_batch=2, progress=False)
    return repo


@contextmanager
def refused(pattern: str, flags: dict[str, str] | None = None):
    """Expect a NadaError whose message as a command prints it (its flags, not the field names; `flags`:
    the command's renamed ones) matches `pattern`."""
    from nada_core.errors import NadaError

    with pytest.raises(NadaError) as caught:
        yield caught
    line = caught.value.for_command_line(flags)
    assert re.search(pattern, line), f"{line!r} does not match {pattern!r}"


@pytest.fixture(scope="module")
def encoder_file(tmp_path_factory) -> Path:
    """A ReStyle-e4e checkpoint on disk as the authors save one: the fixtures' encoder
    (tests/test_encoders.py), and for a decoder a narrow 8-px generator taking 512-wide codes (quicker
    to build and draw than the authors' 512-channel one; nada reads any widths)."""
    from tests.test_encoders import checkpoint, narrow_decoder

    ckpt = checkpoint("restyle_e4e")
    state = {k: v for k, v in ckpt["state_dict"].items() if k.startswith("encoder.")}
    state.update({f"decoder.{k}": v for k, v in narrow_decoder().state_dict().items()})
    path = tmp_path_factory.mktemp("encoder") / "restyle_e4e.pt"
    torch.save({**ckpt, "state_dict": state}, path)
    return path


LIGHT_STAGES = ((8, 8, 1), (8, 16, 1), (16, 32, 1), (32, 32, 1))  # one unit a stage, codes 32 wide


def light_encoder_file(folder: Path) -> Path:
    """A ReStyle-e4e checkpoint in the authors' layout with a backbone of four units (the authors' has
    24) and 32-wide codes for an 8-px decoder: every kind of layer of the real encoder, so the export
    and serving tests that override encoder_file with it check the same graph code, compiled and run
    in seconds rather than a minute (the IR-50 layout itself: tests/test_encoders.py)."""
    from nada_train.encoders.heads import StyleEncoder
    from nada_train.encoders.loading import STAGES_OPT
    from tests.encoder_fixtures import named_weights
    from tests.test_encoders import KIND_TYPE

    decoder = Generator(GeneratorConfig(size=8, style_dim=32, n_mlp=2, channels=(16, 16)))
    network = StyleEncoder(decoder.n_latent, 6, pyramid=False, progressive=True, stages=LIGHT_STAGES)
    named_weights(decoder, seed=5)
    named_weights(network, seed=5)
    with torch.no_grad():  # heads 10x steeper: the photo moves the 8-px images by up to 17 levels, not 3
        for head in network.styles:
            head.linear.weight.mul_(10)
    state = {f"encoder.{k}": v for k, v in network.state_dict().items()}
    state.update({f"decoder.{k}": v for k, v in decoder.state_dict().items()})
    opts = {
        "encoder_type": KIND_TYPE["restyle_e4e"],
        "start_from_latent_avg": True,
        "output_size": 8,
        STAGES_OPT: [list(stage) for stage in LIGHT_STAGES],
    }
    latent_avg = (0.3 * torch.randn(32, generator=torch.Generator().manual_seed(7))).repeat(
        decoder.n_latent, 1
    )
    path = folder / "restyle_e4e_light.pt"
    torch.save({"state_dict": state, "opts": opts, "latent_avg": latent_avg}, path)
    return path


@pytest.fixture(scope="module")
def encoder_runs(encoder_file, tmp_path_factory) -> list[Path]:
    """Two runs (a, b) adapted from encoder_file's decoder, as nada-train --generator E.pt leaves them."""
    from tests.test_edit import make_run

    base, folder = load_generator(encoder_file).generator, tmp_path_factory.mktemp("runs")
    return [make_run(folder / n, encoder_file, adapted_copy(base, i + 1)) for i, n in enumerate("ab")]


@contextmanager
def served(repository, **options):
    """tritonserver on `repository` started as nada-serve starts it (one that crashes while loading is
    started again: Supervisor.start), stopped afterwards."""
    from nada_serve.server import TritonServer
    from nada_serve.supervisor import Supervisor

    server = TritonServer(repository, **options)
    try:
        Supervisor(server, log=lambda line: print(line, file=sys.stderr)).start()
        yield server
    finally:
        server.stop()
