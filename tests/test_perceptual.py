"""LPIPS-VGG against the lpips package's own LPIPS (tests/data/encoders/make_lpips_fixture.py), and
its file in the package's layout read as data."""

from pathlib import Path

import numpy as np
import pytest
import torch

from nada_core.errors import NadaError
from nada_train.perceptual import LPIPS, _Scaling, load_lpips
from tests.encoder_fixtures import named_weights, photos

FIXTURE = Path(__file__).parent / "data" / "encoders" / "lpips.npz"


def fixture_lpips() -> LPIPS:
    model = LPIPS().eval()
    named_weights(model)
    model.scaling_layer = _Scaling()  # the constants, as the fixture keeps lpips' own
    return model


def as_input(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1


def test_distances_match_the_lpips_package():
    model = fixture_lpips()
    a, b = as_input(photos(2, 64, seed=21)), as_input(photos(2, 64, seed=22))
    with torch.no_grad():
        got = model(a, b).numpy()
        same = model(a, a).numpy()
    want = np.load(FIXTURE)["distances"]
    np.testing.assert_allclose(got, want, rtol=1e-4)
    assert np.all(same == 0)


def test_a_file_in_the_packages_layout_loads_and_only_that(tmp_path):
    model = fixture_lpips()
    path = tmp_path / "lpips_vgg.pth"
    torch.save(model.state_dict(), path)
    loaded = load_lpips(path)
    a, b = as_input(photos(1, 32, seed=1)), as_input(photos(1, 32, seed=2))
    with torch.no_grad():
        assert torch.equal(loaded(a, b), model(a, b))
    lins = {k: v for k, v in model.state_dict().items() if k.startswith("lin")}
    torch.save(lins, tmp_path / "vgg.pth")  # what the lpips wheel ships: the linear layers alone
    with pytest.raises(NadaError, match=r"only the linear layers .* the VGG16 trunk is needed too: save one"):
        load_lpips(tmp_path / "vgg.pth")
    torch.save({"g_ema": {}}, tmp_path / "other.pth")
    with pytest.raises(NadaError, match=r"not an LPIPS state dict \(no lin0\.\* tensors\)"):
        load_lpips(tmp_path / "other.pth")
    with pytest.raises(NadaError, match="no such file"):
        load_lpips(tmp_path / "missing.pth")


def test_large_images_are_measured_at_256_px():
    model = fixture_lpips()
    a, b = as_input(photos(1, 512, seed=3)), as_input(photos(1, 512, seed=4))
    down = [torch.nn.functional.interpolate(x, size=(256, 256), mode="area") for x in (a, b)]
    with torch.no_grad():
        assert torch.equal(model.distance(a, b), model(*down))
