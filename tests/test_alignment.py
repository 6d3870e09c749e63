"""FFHQ alignment against the encoders' own align_face (e4e's utils/alignment.py, run by
tests/data/encoders/make_alignment_fixture.py) on fixed landmarks."""

from pathlib import Path

import numpy as np
import pytest

from nada_core.errors import NadaError
from nada_train.alignment import align_face, face_quad
from tests.encoder_fixtures import photos

FIXTURE = Path(__file__).parent / "data" / "encoders" / "alignment.npz"


@pytest.mark.parametrize("case", ["inside the photo", "past its edge (padded)", "large (shrunk first)"])
def test_aligned_faces_match_the_authors_align_face(case):
    want = np.load(FIXTURE)
    i = ["inside the photo", "past its edge (padded)", "large (shrunk first)"].index(case)
    got = align_face(photos(1, 512, seed=11)[0], want["landmarks"][i])
    assert got.shape == (256, 256, 3) and got.dtype == np.uint8
    assert np.abs(got.astype(int) - want["aligned"][i].astype(int)).max() <= 1


def test_the_crop_is_square_turned_with_the_eyes_and_its_size_follows_the_face():
    lm = np.load(FIXTURE)["landmarks"][0]
    quad, side = face_quad(lm)
    edges = np.diff(np.vstack([quad, quad[:1]]), axis=0)
    np.testing.assert_allclose(np.hypot(*edges.T), side)  # four equal sides
    assert abs(np.dot(edges[0], edges[1])) < 1e-6 * side**2  # at right angles
    twice, side2 = face_quad((lm - lm.mean(0)) * 2 + lm.mean(0))
    assert side2 == pytest.approx(2 * side)
    with pytest.raises(
        NadaError, match=r"landmarks: expected 68 \(x, y\) points as dlib gives them, got shape \[5, 2\]"
    ):
        face_quad(lm[:5])
