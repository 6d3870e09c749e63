"""The served encoder as an AOTInductor package: nada-export --engine aoti --encoder compiles the
encoder (ReStyle's step unrolled) beside the domain's graphs, checks it against PyTorch, and the
served NAME_edit draws a photo as nada-edit does. The IR-SE50 backbone takes about a minute and a half
to compile here: one step, one domain."""

import json

import numpy as np

from nada_export.pipeline import export
from nada_export.triton_repo import ServeOptions
from nada_serve.client import GeneratorClient
from nada_serve.server import TritonServer
from nada_train.edit import edit
from nada_train.encoders.loading import load_encoder
from tests.encoder_fixtures import photos


def test_an_aoti_encoder_is_checked_and_served_as_nada_edit_draws(tmp_path, encoder_file, encoder_runs):
    repo = tmp_path / "repo"
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
    encoder = json.loads((repo / "manifest.json").read_text())["encoder"]["model"]
    (encoded,) = [f for f in report.files if f.model == encoder]
    assert encoded.path == f"{encoder}.pt2" and encoded.parity.passed and encoded.parity.max_abs_error < 1e-4
    assert (repo / encoder / "1" / f"{encoder}.pt2").stat().st_size > 0
    pictures = photos(3, 90, seed=41)
    with TritonServer(repo) as server, GeneratorClient(server.endpoints.grpc, "a") as client:
        got = client.edit(pictures)
    drawn = edit(list(pictures), encoder_runs[:1], encoder=load_encoder(encoder_file), encoder_steps=1)
    local = np.stack([e.domains["a"] for e in drawn])
    assert np.abs(got.astype(int) - local.astype(int)).max() <= 1
