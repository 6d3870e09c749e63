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


def test_no_face_is_one_line_naming_the_image_and_the_largest_face_is_taken(monkeypatch):
    """detect_landmarks' handling of what dlib's detector answers, with a stand-in module shaped as
    dlib's API (dlib itself is not installed here): no face is one line naming the image and the fix;
    of two faces the larger one's 68 points are returned."""
    import sys
    import types

    from nada_core.errors import NadaError
    from nada_train.alignment import detect_landmarks

    class Rect:
        def __init__(self, w, h):
            self.w, self.h = w, h

        def width(self):
            return self.w

        def height(self):
            return self.h

    found: list = []
    asked = []

    def predictor(path):
        def predict(image, face):
            asked.append(face)
            return types.SimpleNamespace(
                parts=lambda: [types.SimpleNamespace(x=i, y=face.w) for i in range(68)]
            )

        return predict

    stand_in = types.SimpleNamespace(
        get_frontal_face_detector=lambda: lambda image, upsample: found, shape_predictor=predictor
    )
    monkeypatch.setitem(sys.modules, "dlib", stand_in)
    photo = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(NadaError) as e:
        detect_landmarks(photo, "sp.dat", "me.png")
    assert (
        e.value.for_command_line()
        == "--align me.png: no face found; give its landmarks with --landmarks FILE.npy"
    )
    found[:] = [Rect(10, 10), Rect(20, 30), Rect(25, 5)]
    points = detect_landmarks(photo, "sp.dat", "me.png")
    assert asked == [found[1]] and points.shape == (68, 2) and (points[:, 1] == 20).all()


def test_align_checks_dlib_and_its_model_before_reading_any_photo(monkeypatch, tmp_path):
    """read_photos(align=True) refuses a shape predictor it cannot use before the first photo is read
    (the photo named does not exist: its own error would come first otherwise); detect_landmarks
    called directly without dlib says the same."""
    import re
    import sys
    import types

    from nada_train.alignment import detect_landmarks, read_photos
    from tests.conftest import refused

    flags = {"shape_predictor": "--shape-predictor"}
    missing_photo, predictor = tmp_path / "me.png", tmp_path / "sp.dat"
    named = re.escape(str(predictor))
    monkeypatch.setitem(sys.modules, "dlib", None)
    with refused(rf"^--shape-predictor '{named}': face detection needs dlib \(pip install dlib\)$", flags):
        read_photos([missing_photo], 64, True, predictor)
    with refused(rf"^--shape-predictor '{named}': face detection needs dlib", flags):  # called directly
        detect_landmarks(np.zeros((8, 8, 3), np.uint8), str(predictor))
    monkeypatch.setitem(sys.modules, "dlib", types.SimpleNamespace())
    with refused(rf"^--shape-predictor '{named}': no such file; give dlib's shape_predictor_68", flags):
        read_photos([missing_photo], 64, True, predictor)
