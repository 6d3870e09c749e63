"""Image to image, served: nada-export --encoder adds the encoder's model (photo -> W+) and per domain
NAME_edit (photo -> image in that domain); a real tritonserver answers it as nada-edit draws it."""

import json

import numpy as np
import pytest
from PIL import Image

from nada_core.errors import NadaError
from nada_export.pipeline import export
from nada_serve.client import GeneratorClient
from nada_train.edit import edit
from nada_train.encoders.loading import load_encoder
from tests.conftest import light_encoder_file, served
from tests.encoder_fixtures import photos

MAX_BATCH = 2
STEPS = 2  # ReStyle refinements built into the served encoder (the default is 5)


@pytest.fixture(scope="module")
def encoder_file(tmp_path_factory):
    """The four-unit encoder: this module checks the export and the served graph, not the IR-50."""
    return light_encoder_file(tmp_path_factory.mktemp("encoder"))


@pytest.fixture(scope="module")
def repo(tmp_path_factory, encoder_file, encoder_runs):
    path = tmp_path_factory.mktemp("edit-service") / "repo"
    report = export(
        [encoder_file, *encoder_runs],
        path,
        names=["base", "a", "b"],
        max_batch=MAX_BATCH,
        encoder=encoder_file,
        encoder_steps=STEPS,
        progress=False,
    )
    return path, report


@pytest.fixture(scope="module")
def server(repo):
    with served(repo[0]) as s:
        yield s


def encoder_model(repo) -> str:
    return json.loads((repo[0] / "manifest.json").read_text())["encoder"]["model"]


def test_the_repository_lists_the_encoder_and_each_domains_edit_model(repo, encoder_file):
    path, report = repo
    manifest = json.loads((path / "manifest.json").read_text())
    sha = load_encoder(encoder_file).sha256
    assert manifest["encoder"] == {
        "model": f"encoder_{sha[:12]}",
        "source": str(encoder_file),
        "kind": "restyle_e4e",
        "steps": STEPS,
        "sha256": sha,
    }
    assert [manifest["models"][n]["edit"] for n in ("base", "a", "b")] == ["base_edit", "a_edit", "b_edit"]
    readme = (path / "README.md").read_text()
    assert "| `a_edit` | `photo` UINT8 [256, 256, 3] | `image` UINT8 [8, 8, 3] |" in readme
    assert f"| `encoder_{sha[:12]}` | `photo` UINT8 [256, 256, 3] | `ws` FP32 [4, 32] |" in readme
    assert f"restyle_e4e encoder ({STEPS} refinement steps)" in readme
    (encoded,) = [f for f in report.files if f.model == f"encoder_{sha[:12]}"]
    assert encoded.parity.passed and encoded.parity.max_abs_error < 1e-4 and encoded.parity.batches == [1, 2]
    config = (path / "a_edit" / "config.pbtxt").read_text()
    assert f'model_name: "encoder_{sha[:12]}"' in config and 'model_name: "a_synthesis"' in config


def test_served_edits_equal_nada_edit_within_one_level(repo, server, encoder_file, encoder_runs):
    """Three photos of other sizes than the encoder's (more than a request holds): each domain's
    image and the base's reconstruction as nada.edit draws them."""
    pictures = [*photos(2, 100, seed=21), photos(1, 300, seed=22)[0]]
    encoder = load_encoder(encoder_file)
    local = edit(pictures, encoder_runs, encoder=encoder, encoder_steps=STEPS)
    url = server.endpoints.grpc
    for model, want in (
        ("a", [e.domains["a"] for e in local]),
        ("b", [e.domains["b"] for e in local]),
        ("base", [e.reconstruction for e in local]),
    ):
        with GeneratorClient(url, model) as client:
            got = client.edit(pictures)
        assert got.shape == (3, 8, 8, 3) and got.dtype == np.uint8
        assert np.abs(got.astype(int) - np.stack(want).astype(int)).max() <= 1, model
    assert np.abs(local[0].domains["a"].astype(int) - local[0].domains["b"].astype(int)).max() > 10
    # the encoder's own model: W+ codes as LoadedEncoder.encode gives them
    from tests.test_serving import infer

    resized = np.stack([np.asarray(Image.fromarray(p).resize((256, 256), Image.BILINEAR)) for p in pictures])
    codes = infer(server, encoder_model(repo), {"photo": resized[:2]}).as_numpy("ws")
    np.testing.assert_allclose(codes, encoder.encode(pictures[:2], steps=STEPS), atol=1e-4)


def test_nada_client_image_writes_each_photo_as_nada_edit_draws_it(
    server, encoder_file, encoder_runs, tmp_path
):
    """Photo files, not square: nada-client --image reads them as nada-edit does (the centre square
    at the encoder's side), so its PNGs are nada-edit's images in that domain within 1 level."""
    from tests.test_cli import run
    from tests.test_serving import cli

    files = []
    for i, p in enumerate(photos(2, 64, seed=31)[:, :, :48]):
        Image.fromarray(p).save(tmp_path / f"me{i}.png")
        files.append(str(tmp_path / f"me{i}.png"))
    args = [a for f in files for a in ("--image", f)]
    url = server.endpoints.grpc
    r = cli(
        "nada_serve.cli.client", "--url", url, "--model", "a", *args, "--out", str(tmp_path / "out"), "--grid"
    )
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["grid.png", "me0.png", "me1.png"]
    runs = [a for r in encoder_runs for a in ("--run", str(r))]
    edit_args = [
        "--encoder",
        str(encoder_file),
        "--encoder-steps",
        str(STEPS),
        "--out",
        str(tmp_path / "edits"),
    ]
    r = run(["nada_train.cli.edit", "nada-edit", *files, *runs, *edit_args])
    assert r.returncode == 0, r.stderr
    for i in range(2):
        got = np.asarray(Image.open(tmp_path / "out" / f"me{i}.png")).astype(int)
        want = np.asarray(Image.open(tmp_path / "edits" / f"me{i}" / "a.png")).astype(int)
        assert np.abs(got - want).max() <= 1
    (tmp_path / "notes.png").write_text("not an image")
    r = cli(
        "nada_serve.cli.client",
        "--url",
        server.endpoints.grpc,
        "--model",
        "a",
        "--image",
        str(tmp_path / "notes.png"),
    )
    assert r.returncode == 2 and r.stderr.startswith(
        f"nada-client: error: --image '{tmp_path / 'notes.png'}': not an image"
    )
    assert len(r.stderr.strip().splitlines()) == 1
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "me0.png").write_bytes((tmp_path / "me0.png").read_bytes())
    twice = ["--image", str(tmp_path / "me0.png"), "--image", str(tmp_path / "other" / "me0.png")]
    r = cli("nada_serve.cli.client", "--url", url, "--model", "a", *twice, "--out", str(tmp_path / "twice"))
    assert r.returncode == 2 and r.stderr.strip() == (
        "nada-client: error: --image: two photos named 'me0' would both be written as me0.png"
    )
    assert not (tmp_path / "twice").exists()


def test_a_model_without_an_edit_model_and_bad_photos_are_refused_in_one_line(server):
    url = server.endpoints.grpc
    with GeneratorClient(url, "a_synthesis") as client, pytest.raises(NadaError) as e:
        client.edit(photos(1, 32))
    assert str(e.value) == (
        f"model a_synthesis at {url}: no a_synthesis_edit is served to take photos; export with nada-export "
        "--encoder ENCODER.pt"
    )
    encoder = next(m["name"] for m in server.models() if m["name"].startswith("encoder_"))
    with (
        GeneratorClient(url, encoder) as client,
        pytest.raises(NadaError, match=f"no {encoder}_edit is served"),
    ):
        client.edit(photos(1, 32))  # the encoder takes photos, but gives codes
    with GeneratorClient(url, "a") as client:
        with pytest.raises(
            NadaError, match=r"^encoder input: expected uint8 images \[N, H, W, 3\], got float32"
        ):
            client.edit(np.zeros((1, 32, 32, 3), np.float32))
        with pytest.raises(
            NadaError, match=r"^encoder input: expected uint8 images \[N, H, W, 3\], got uint8 \[1, 32, 32\]$"
        ):
            client.edit([np.zeros((32, 32), np.uint8)])


def test_an_encoder_that_does_not_fit_the_generators_is_refused_before_any_work(
    tmp_path,
    encoder_file,
    encoder_runs,
):
    from nada_export.cli.export import FLAGS
    from tests.conftest import refused, write_base_checkpoint

    other = write_base_checkpoint(tmp_path)
    with refused(rf"^--encoder '{encoder_file}': its decoder is not the base of 'other' \(", FLAGS):
        export([other], tmp_path / "repo", names=["other"], encoder=encoder_file, progress=False)
    with refused(r"^--encoder-steps given without --encoder; name the encoder checkpoint$", FLAGS):
        export([encoder_runs[0]], tmp_path / "repo", encoder_steps=2, progress=False)
    with refused(r"^--encoder-steps 0: give at least 1$", FLAGS):
        export([encoder_runs[0]], tmp_path / "repo", encoder=encoder_file, encoder_steps=0, progress=False)
    assert not (tmp_path / "repo").exists()


def test_a_later_export_without_the_encoder_keeps_its_models_and_record(repo, encoder_runs, tmp_path):
    """Exporting another domain into the repository later keeps the encoder's model, its manifest
    entry and every earlier model's parity."""
    import shutil

    path = tmp_path / "repo"
    shutil.copytree(repo[0], path)
    before = json.loads((path / "manifest.json").read_text())
    export([encoder_runs[1]], path, names=["c"], max_batch=MAX_BATCH, progress=False)
    after = json.loads((path / "manifest.json").read_text())
    assert after["encoder"] == before["encoder"] and (path / before["encoder"]["model"]).is_dir()
    assert before["parity"].items() <= after["parity"].items() and "c_synthesis" in after["parity"]
    assert "edit" not in after["models"]["c"] and after["models"]["a"]["edit"] == "a_edit"
