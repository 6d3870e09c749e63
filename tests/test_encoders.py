"""pSp, e4e and ReStyle encoders against fixtures made by their authors' code (scratch runs with the
weights of tests/encoder_fixtures.named_weights; tests/data/encoders/make_fixtures.py makes them)."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from nada_core.errors import NadaError
from nada_train.encoders.heads import StyleEncoder
from nada_train.encoders.loading import ENCODER_TYPES, encoder_from_checkpoint, load_encoder
from nada_train.generator import Generator, GeneratorConfig
from nada_train.images import to_uint8
from tests.encoder_fixtures import named_weights, photos

FIXTURES = Path(__file__).parent / "data" / "encoders"
# the fixtures' decoders: 32 px (8 W+ codes, every level of the pyramid) for pSp and e4e, 8 px (4 codes)
# for the ReStyles, whose heads all read one level
SIZES = {False: 32, True: 8}
KIND_TYPE = {kind: t for t, (kind, *_) in ENCODER_TYPES.items()}


def decoder(size: int) -> Generator:
    n = int(math.log2(size)) - 1
    return Generator(GeneratorConfig(size=size, style_dim=512, n_mlp=8, channels=(512,) * n))


@functools.cache
def fixture_state(restyle: bool) -> dict:
    """encoder.* and decoder.* with the fixtures' weights; pSp and e4e share them, as do the ReStyles."""
    n_styles = 2 * int(math.log2(SIZES[restyle])) - 2
    with torch.device("meta"):  # every tensor is drawn by named_weights
        encoder = StyleEncoder(n_styles, 6 if restyle else 3, pyramid=not restyle)
    encoder.to_empty(device="cpu")
    g = decoder(SIZES[restyle])
    named_weights(encoder)
    named_weights(g)
    state = {f"encoder.{k}": v for k, v in encoder.state_dict().items()}
    state.update({f"decoder.{k}": v for k, v in g.state_dict().items()})
    return state


def checkpoint(kind: str) -> dict:
    """The authors' checkpoint layout with the fixtures' weights: encoder.*, decoder.*, opts, latent_avg."""
    size = SIZES[kind.startswith("restyle")]
    n_styles = 2 * int(math.log2(size)) - 2
    latent_avg = (0.3 * torch.randn(512, generator=torch.Generator().manual_seed(7))).repeat(n_styles, 1)
    opts = {"encoder_type": KIND_TYPE[kind], "start_from_latent_avg": True, "output_size": size}
    return {
        "state_dict": dict(fixture_state(kind.startswith("restyle"))),
        "opts": opts,
        "latent_avg": latent_avg,
    }


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max() / np.abs(want).max())


@pytest.mark.parametrize("kind", ["psp", "e4e", "restyle_psp", "restyle_e4e"])
def test_codes_and_images_match_the_authors_code(kind):
    """W+ within 1e-4 of the largest code, decoded images within 1 level, for the same checkpoint run
    by the authors' pSp/e4e/ReStyle classes (ReStyle: 2 refinement steps from the average image)."""
    want = np.load(FIXTURES / f"{kind}.npz")
    encoder = encoder_from_checkpoint(checkpoint(kind), f"{kind}.pt")
    assert encoder.kind == kind and encoder.generator.generator.n_latent == want["codes"].shape[1]
    images = photos(len(want["codes"]), int(want["input_size"]), seed=1)
    with torch.no_grad():
        if kind.startswith("restyle"):
            codes = encoder.encode(images, steps=int(want["steps"]))
        else:  # the authors' network at its own input size (64 px here, to keep the test short)
            codes = encoder.encode_tensor(preprocess_at_size(images)).numpy()
        drawn = to_uint8(encoder.generator.generator.synthesis(torch.from_numpy(codes), noise_mode="const"))
    assert relative_error(codes, want["codes"]) < 1e-4
    assert np.abs(drawn.numpy().astype(int) - want["images"].astype(int)).max() <= 1


def test_photos_are_sized_and_scaled_as_the_authors_transforms_do():
    """The authors' inference transform (Resize((256, 256)), ToTensor, Normalize(0.5, 0.5)) on PIL
    images, against preprocess, which nada's encode and the served encoder's client share; the
    served encoder's photo side is the encoders' input size."""
    from PIL import Image
    from torchvision import transforms

    from nada_export.tensors import PHOTO_SIDE
    from nada_train.encoders.loading import INPUT_SIZE, preprocess

    authors = transforms.Compose(
        [transforms.Resize((256, 256)), transforms.ToTensor(), transforms.Normalize([0.5] * 3, [0.5] * 3)]
    )
    pictures = [photos(1, 100, seed=1)[0], photos(1, 300, seed=2)[0][:, :200]]  # smaller, larger, not square
    want = torch.stack([authors(Image.fromarray(p)) for p in pictures])
    torch.testing.assert_close(preprocess(pictures), want, rtol=0, atol=1e-6)
    assert PHOTO_SIDE == INPUT_SIZE == 256


def preprocess_at_size(images: np.ndarray) -> torch.Tensor:
    return (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5


@functools.cache
def narrow_decoder() -> Generator:
    g = Generator(GeneratorConfig(size=8, style_dim=512, n_mlp=2, channels=(16, 16)))
    named_weights(g)
    return g


def test_an_encoder_file_is_read_as_data_and_its_decoder_is_a_base(encoder_file):
    """load_encoder reads the file (weights_only) and encodes photos of any size;
    load_generator of the same file is its decoder, w_avg the latent average's row."""
    from nada_train.checkpoints import load_generator

    encoder = load_encoder(encoder_file)
    assert encoder.kind == "restyle_e4e" and encoder.default_steps == 5
    codes = encoder.encode(photos(1, 64, seed=3), steps=1)  # 64 px, resized to 256 on the way in
    assert codes.shape == (1, 4, 512) and codes.dtype == np.float32
    base = load_generator(encoder_file)
    assert base.sha256 == encoder.generator.sha256
    decoder = encoder.generator.generator.state_dict()
    assert all(torch.equal(v, decoder[k]) for k, v in base.generator.state_dict().items())
    torch.testing.assert_close(base.generator.w_avg, encoder.latent_avg[0])
    with pytest.raises(NadaError, match=r"encoder input: expected uint8 images \[N, H, W, 3\], got float32"):
        encoder.encode(np.zeros((1, 8, 8, 3), np.float32))
    with pytest.raises(NadaError, match=r"restyle_e4e\.pt': steps 0: give at least 1$"):
        encoder.encode(photos(1, 64), steps=0)
    with pytest.raises(NadaError, match=r"steps 2: a psp encoder takes 1 step"):
        encoder.kind = "psp"
        encoder.encode(photos(1, 64), steps=2)


class RunsCode:
    def __reduce__(self):
        import os

        return (os.system, ("touch ran.txt",))


def test_an_encoder_pickle_that_would_run_code_is_refused_and_runs_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "e4e_ffhq_encode.pt"
    torch.save({"state_dict": {}, "opts": RunsCode()}, path)
    with pytest.raises(NadaError) as e:
        load_encoder(path)
    assert str(e.value) == (
        f"encoder '{path}': the file holds Python objects beyond tensors and would run code when loaded; "
        "refused. nada reads it as data only"
    )
    assert not (tmp_path / "ran.txt").exists()


def test_what_is_not_an_encoder_of_the_family_is_refused_in_one_line(tmp_path):
    def refusal(ckpt) -> str:
        with pytest.raises(NadaError) as e:
            encoder_from_checkpoint(ckpt, "E.pt")
        return str(e.value)

    good = checkpoint("restyle_psp")
    assert refusal({"g_ema": {}}) == (
        "encoder 'E.pt': not a pSp/e4e/ReStyle checkpoint (expected 'state_dict' with encoder.* and decoder.* "
        "tensors)"
    )
    assert refusal({**good, "opts": {"encoder_type": "ResNetBackboneEncoder"}}) == (
        "encoder 'E.pt': encoder_type 'ResNetBackboneEncoder' in its opts; nada reads GradualStyleEncoder, "
        "Encoder4Editing, BackboneEncoder, ProgressiveBackboneEncoder"
    )
    assert refusal({**good, "opts": {"encoder_type": "GradualStyleEncoder"}}) == (
        "encoder 'E.pt': a psp encoder with 6 input channels (ReStyle's read 6: the photo and the current "
        "reconstruction; the others 3)"
    )
    fewer = {k: v for k, v in good["state_dict"].items() if not k.startswith("encoder.styles.3.")}
    assert refusal({**good, "state_dict": fewer}) == (
        "encoder 'E.pt': 3 codes from the encoder, but its decoder takes 4"
    )
    with pytest.raises(NadaError, match="no such file"):
        load_encoder(tmp_path / "missing.pt")


def test_an_encoders_codes_are_drawn_in_each_domain_of_its_decoders_runs(
    encoder_file, encoder_runs, tmp_path, monkeypatch
):
    """nada.edit with an encoder: the codes are the encoder's, the reconstruction and each domain their
    drawings by the base and by each run; an encoder whose decoder is not the runs' base is refused."""
    import nada_train.edit
    from nada_train.checkpoints import load_generator
    from nada_train.cli.edit import FLAGS
    from nada_train.edit import edit
    from tests.conftest import adapted_copy, refused, write_base_checkpoint
    from tests.test_edit import make_run

    photo, encoder = photos(1, 40, seed=5)[0], load_encoder(encoder_file)
    reads, real = [], nada_train.edit.load_generator
    monkeypatch.setattr(
        nada_train.edit, "load_generator", lambda spec, *a: reads.append(str(spec)) or real(spec, *a)
    )
    (edited,) = edit([photo], encoder_runs, names=["me"], encoder=encoder, encoder_steps=1)
    assert reads == [str(r) for r in encoder_runs]  # the encoder's decoder is the base: not read again
    base = encoder.generator
    ws = torch.from_numpy(encoder.encode(photo[None], steps=1))
    np.testing.assert_array_equal(edited.ws, ws[0].numpy())
    np.testing.assert_array_equal(edited.reconstruction, base.synthesize(ws)[0])
    np.testing.assert_array_equal(edited.domains["a"], load_generator(encoder_runs[0]).synthesize(ws)[0])
    assert not np.array_equal(edited.domains["a"], edited.domains["b"])
    other = make_run(tmp_path / "c", write_base_checkpoint(tmp_path), adapted_copy(base.generator, 3))
    with refused(
        r"^--encoder '.*restyle_e4e\.pt': its decoder is not the runs' base \(.*base\.pt\); train", FLAGS
    ):
        edit([photo], [other], encoder=encoder)


def test_nada_edit_with_an_encoder_writes_every_promised_file(encoder_file, encoder_runs, tmp_path):
    """The command, as a user runs it: the photo aligned by its landmarks at the encoder's 256 px, its
    codes written."""
    from PIL import Image

    from nada_train.alignment import align_face
    from tests.test_cli import run

    photo = photos(1, 512, seed=11)[0]
    Image.fromarray(photo).save(tmp_path / "me.png")
    landmarks = np.load(Path(__file__).parent / "data" / "encoders" / "alignment.npz")["landmarks"][0]
    np.save(tmp_path / "me.npy", landmarks)
    out = tmp_path / "edits"
    runs = [
        "--run",
        str(encoder_runs[0]),
        "--run",
        str(encoder_runs[1]),
        "--landmarks",
        str(tmp_path / "me.npy"),
    ]
    args = [str(tmp_path / "me.png"), *runs, "--encoder", str(encoder_file), "--encoder-steps", "2"]
    r = run(["nada_train.cli.edit", "nada-edit", *args, "--out", str(out), "--grid", "--save-latents"])
    assert r.returncode == 0, r.stderr
    files = sorted(p.name for p in (out / "me").iterdir())
    assert files == ["a.png", "b.png", "grid.png", "input.png", "reconstruction.png"]
    want = load_encoder(encoder_file).encode(align_face(photo, landmarks)[None], steps=2)  # aligned at 256
    np.testing.assert_array_equal(np.load(out / "me.npy"), want[0])
    assert (
        "me: reconstruction PSNR " in r.stdout
        and " dB (restyle_e4e encoder, 2 steps); 2 domains in " in r.stdout
    )


def test_alignment_asked_without_what_it_needs_is_refused_in_one_line(tmp_path):
    from PIL import Image

    from nada_train.alignment import read_photos
    from nada_train.cli.edit import FLAGS
    from tests.conftest import refused

    Image.fromarray(photos(1, 64)[0]).save(tmp_path / "me.png")
    images = [tmp_path / "me.png"]
    with refused(r"^--landmarks: 2 files for 1 images; give one per image$", FLAGS):
        read_photos(images, 64, False, None, [tmp_path / "a.npy", tmp_path / "b.npy"])
    with refused(
        r"^--align: give dlib's 68-landmark model with --shape-predictor FILE, or --landmarks$", FLAGS
    ):
        read_photos(images, 64, True, None, None)
    np.save(tmp_path / "few.npy", np.zeros((5, 2)))
    with refused(r"^--landmarks '.*few\.npy': expected 68 x 2 points, got shape \[5, 2\]$", FLAGS):
        read_photos(images, 64, False, None, [tmp_path / "few.npy"])
    # without dlib (as here) --shape-predictor says how to get it
    try:
        import dlib  # noqa: F401
    except ImportError:
        with refused(
            r"^--shape-predictor .*predictor\.dat': face detection needs dlib \(pip install dlib\)$", FLAGS
        ):
            read_photos(images, 64, True, tmp_path / "predictor.dat", None)


NARROW_STAGES = ((8, 8, 1), (8, 16, 1), (16, 32, 2), (32, 32, 1))  # codes 32 wide: the tests' base's w


def narrow_encoder_file(folder: Path) -> tuple[Path, StyleEncoder, Path]:
    """An encoder trained here, as save_encoder writes it: narrow stages, codes 64 wide, its decoder
    (the tests' 32-px base, 8 codes) beside it."""
    from tests.conftest import write_base_checkpoint

    decoder = write_base_checkpoint(folder)
    with torch.device("cpu"):
        network = StyleEncoder(
            8, 3, pyramid=True, progressive=True, stages=NARROW_STAGES[:3] + ((32, 32, 1),)
        )
    named_weights(network, seed=4)
    latent_avg = torch.randn(8, 32, generator=torch.Generator().manual_seed(2))
    from nada_train.encoders.loading import save_encoder

    path = folder / "mine.safetensors"
    save_encoder(network.eval(), "e4e", latent_avg, decoder, path)
    return path, network, decoder


def test_an_encoder_trained_here_round_trips_with_its_decoder(tmp_path):
    """save_encoder -> load_encoder: the same network (narrow stages, read from the file's opts), its
    latent average, and the decoder named beside it, checked by its sha256; the taps of the authors'
    IR-50 are units 6, 20 and 23."""
    from nada_core.fileio import sha256_file
    from nada_train.encoders.backbone import IRSE50
    from nada_train.encoders.loading import preprocess

    path, network, decoder = narrow_encoder_file(tmp_path)
    loaded = load_encoder(path)
    assert (
        loaded.kind == "e4e"
        and loaded.sha256 == sha256_file(path)
        and loaded.network.stages == network.stages
    )
    assert loaded.generator.sha256 == sha256_file(decoder) and loaded.generator.source == str(decoder)
    x = preprocess(photos(2, 40, seed=8))
    with torch.no_grad():
        want = network(x) + loaded.latent_avg[None]
    np.testing.assert_array_equal(loaded.encode(photos(2, 40, seed=8)), want.numpy())
    assert IRSE50().taps == (6, 20, 23)
    from nada_train.checkpoints import save_rosinality
    from tests.conftest import tiny_generator

    save_rosinality(tiny_generator(seed=1), decoder)  # the decoder changed after training
    with pytest.raises(NadaError, match=r"its decoder .*base\.pt has changed since the encoder was trained"):
        load_encoder(path)


def test_what_is_not_an_encoder_file_of_ours_is_refused_in_one_line(tmp_path):
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, tmp_path / "other.safetensors", metadata={"format": "nada-stylegan2"})
    with pytest.raises(NadaError) as e:
        load_encoder(tmp_path / "other.safetensors")
    assert str(e.value) == (
        f"encoder '{tmp_path / 'other.safetensors'}': a safetensors file without nada's encoder metadata "
        "(format 'nada-stylegan2'); pass a pSp, e4e or ReStyle .pt checkpoint or a nada encoder"
    )
    (tmp_path / "torn.safetensors").write_bytes(b"\x08\x00")
    with pytest.raises(NadaError, match=r"torn\.safetensors': not a readable safetensors file"):
        load_encoder(tmp_path / "torn.safetensors")
    with pytest.raises(
        NadaError, match=r"^encoder 'builtin:nowhere': no built-in base of that name ships an encoder"
    ):
        load_encoder("builtin:nowhere")


def test_an_encoder_is_saved_only_beside_its_decoder(tmp_path):
    """The file names its decoder by file name: an encoder written elsewhere is refused, nothing written."""
    from nada_train.encoders.loading import save_encoder

    _, network, decoder = narrow_encoder_file(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(
        NadaError, match=r"its decoder .*base\.pt is in another folder; save the encoder beside"
    ):
        save_encoder(network, "e4e", torch.zeros(8, 32), decoder, tmp_path / "elsewhere" / "e.safetensors")
    assert not list((tmp_path / "elsewhere").iterdir())
