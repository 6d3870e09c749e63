"""Many lightweight domains of one base served as one model (nada-export --domains), on 127.0.0.1:
each item of a batch that mixes domains equals that domain's nada-generate image within one level
(ONNX and AOTInductor), a wrong domain is refused for its request alone, names are taken by the
client, and a domain added by a new export is served without restarting the others."""

from __future__ import annotations

import asyncio
import json
import re
import time

import numpy as np
import pytest

from benchmarks.load import Server
from nada_core.errors import FieldError, NadaError
from nada_export.pipeline import export
from nada_serve.client import GeneratorClient, generate_seeds_async
from nada_train import checkpoints
from nada_train.checkpoints import load_generator
from nada_train.loop import train
from tests.conftest import write_base_checkpoint
from tests.test_serving import cli
from tests.test_trainer import options

SEEDS = [0, 1, 2, 3, 4, 5]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, clip_config_dir):
    folder = tmp_path_factory.mktemp("domains")
    ckpt = write_base_checkpoint(folder, size=16)  # 16 px: each AOTInductor graph compiles quicker
    clip = "nada-test-tiny:random"
    made = {
        # a high rate: four steps of a random CLIP's guidance that move the images visibly
        name: train(options(ckpt, folder / name, clip, parametrization=p, target=t, lr=0.2), progress=False)
        for name, p, t in (("a", "channels", "sketch"), ("b", "styles", "neon"), ("c", "channels", "neon"))
    }
    made["f"] = train(options(ckpt, folder / "f", clip, target="neon"), progress=False)
    return ckpt, made


def local(path, seeds=SEEDS, truncation=0.7) -> np.ndarray:
    return load_generator(path, "cpu").generate(seeds, truncation)


@pytest.fixture(scope="module", params=["onnx", "aoti"])
def served(request, runs, tmp_path_factory):
    ckpt, made = runs
    repo = tmp_path_factory.mktemp(f"repo-{request.param}") / "repo"
    # the full run beside the multi-domain model, as its own: the same for either engine, so one
    # repository has it (an AOTInductor package costs a quarter of a minute to compile here)
    full = ["f"] if request.param == "onnx" else []
    report = export(
        [ckpt, made["a"], made["b"], *[made[n] for n in full]],
        repo,
        names=["base", "a", "b", *full],
        domains="styles",
        engine=request.param,
        device="cpu",
        max_batch=4,
        progress=False,
    )
    assert report.models == ["styles", *full]
    server = Server(repo)
    yield repo, server
    server.stop()


def serves_the_full_run(repo) -> bool:
    return json.loads((repo / "manifest.json").read_text())["models"]["styles"]["engine"] == "onnx"


def test_each_item_of_a_mixed_batch_is_drawn_in_its_own_domain(served, runs):
    repo, server = served
    ckpt, made = runs
    manifest = json.loads((repo / "manifest.json").read_text())
    assert manifest["models"]["styles"]["domains"] == ["base", "a", "b"]
    want = {"base": local(ckpt), "a": local(made["a"]), "b": local(made["b"])}
    domains = ["b", "base", "a", "a", "b", "base"]  # one request of 4, one of 2: both mix domains
    with GeneratorClient(server.url, "styles") as client:
        assert client.model.domains == ["base", "a", "b"]
        got = client.generate(SEEDS, 0.7, domain=domains)
        for i, name in enumerate(domains):
            assert np.abs(got[i].astype(int) - want[name][i]).max() <= 1, (i, name)
        by_index = client.generate(SEEDS, 0.7, domain=1)
        assert np.abs(by_index.astype(int) - want["a"]).max() <= 1
        assert np.abs(want["a"].astype(int) - want["b"]).max() > 10  # the domains do differ
    if serves_the_full_run(repo):  # the full run: its own model, as before
        with GeneratorClient(server.url, "f") as client:
            assert np.abs(client.generate(SEEDS, 0.7).astype(int) - local(made["f"])).max() <= 1


def test_a_wrong_domain_is_refused_for_its_request_alone(served):
    repo, server = served

    async def together():
        asks = [
            generate_seeds_async(server.url, "styles", [s], 0.7, domain=d)
            for s, d in enumerate([0, 7, 2, -1])
        ]
        return await asyncio.gather(*asks, return_exceptions=True)

    first, wrong, third, negative = asyncio.run(together())
    assert first.shape == third.shape == (1, 16, 16, 3)
    for refusal, index in ((wrong, 7), (negative, -1)):
        assert isinstance(refusal, NadaError)
        message = str(refusal)
        assert "\n" not in message
        assert f"domain {index} is not served by this model; its domains are 0 base, 1 a, 2 b" in message
    with GeneratorClient(server.url, "styles") as client:
        with pytest.raises(FieldError, match="'zz': model 'styles' serves base, a, b; name one of them"):
            client.generate([0], domain="zz")
        with pytest.raises(FieldError, match="draws several domains; name one of base, a, b"):
            client.generate([0])
    if serves_the_full_run(repo):
        with GeneratorClient(server.url, "f") as client:
            with pytest.raises(FieldError, match="draws one domain"):
                client.generate([0], domain="a")


def test_nada_client_domain_writes_nada_generate_images(served, runs, tmp_path):
    _, server = served
    _, made = runs
    r = cli(
        "nada_serve.cli.client",
        "--url",
        server.url,
        "--model",
        "styles",
        "--domain",
        "b",
        "--seeds",
        "0-2",
        "--truncation",
        "0.7",
        "--out",
        str(tmp_path),
    )
    assert r.returncode == 0, r.stderr
    from PIL import Image

    want = local(made["b"], [0, 1, 2])
    for i in range(3):
        got = np.asarray(Image.open(tmp_path / f"seed{i:04d}.png")).astype(int)
        assert np.abs(got - want[i]).max() <= 1


def test_a_domain_added_by_a_new_export_is_served_without_a_restart(runs, tmp_path, monkeypatch):
    ckpt, made = runs
    repo = tmp_path / "repo"
    reads, read = [], checkpoints._load_torch_file

    def unbaked(generator, domain):
        raise AssertionError("a domain baked into a copy of its base")

    with monkeypatch.context() as m:
        m.setattr(checkpoints, "_load_torch_file", lambda path, *a: reads.append(path) or read(path, *a))
        m.setattr(checkpoints, "bake", unbaked)
        export([made["a"], made["b"]], repo, domains="styles", max_batch=4, progress=False)
    assert reads == [ckpt]  # the base read once for both domains, not once per run and once more
    server = Server(repo)
    try:
        pid = server.tritonserver_pid()
        with GeneratorClient(server.url, "styles") as client:
            assert client.model.domains == ["a", "b"]
        t0 = time.monotonic()
        export([made["a"], made["b"], made["c"]], repo, domains="styles", max_batch=4, progress=False)
        assert server.wait_event(re.compile(r"styles: a new export changed it.*loaded"), t0, 120)

        def names():
            with GeneratorClient(server.url, "styles") as client:
                return client.model.domains

        deadline = time.monotonic() + 60
        while names() != ["a", "b", "c"] and time.monotonic() < deadline:
            time.sleep(0.2)
        with GeneratorClient(server.url, "styles") as client:
            got = client.generate(SEEDS[:3], 0.7, domain="c")
        assert np.abs(got.astype(int) - local(made["c"], SEEDS[:3])).max() <= 1
        assert server.tritonserver_pid() == pid  # the same server: nothing restarted
    finally:
        server.stop()


def test_domains_refusals_are_one_line(runs, tmp_path):
    ckpt, made = runs
    with pytest.raises(FieldError, match="none of the checkpoints is a lightweight run"):
        export([made["f"]], tmp_path / "r", domains="styles", progress=False)
    with pytest.raises(FieldError, match="drop backend native"):
        from nada_export.triton_repo import ServeOptions

        export(
            [made["a"]],
            tmp_path / "r",
            domains="styles",
            serve=ServeOptions(backend="native"),
            progress=False,
        )
    with pytest.raises(FieldError, match="name the model with lowercase"):
        export([made["a"]], tmp_path / "r", domains="Styles", progress=False)
    assert not (tmp_path / "r").exists()
