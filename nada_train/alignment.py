"""FFHQ's face alignment, as the pSp/e4e/ReStyle encoders expect their input: from 68 facial landmarks
(dlib's layout) an oriented square around eyes and mouth, cut out of the photo (shrunk first when
the face is much larger than the output, padded by reflection with a blurred, median-blended border
when the square leaves the photo), then resampled to size x size."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from nada_core.errors import FieldError, NadaError
from nada_core.pngs import read_image, read_rgb

EYE_LEFT, EYE_RIGHT, MOUTH_OUTER = slice(36, 42), slice(42, 48), slice(48, 60)


def face_quad(landmarks: np.ndarray) -> tuple[np.ndarray, float]:
    """The four corners (x, y) of the crop and its side: centred a tenth of the way from the eyes
    towards the mouth, its half-side the larger of twice the eye distance and 1.8 times the
    eye-to-mouth distance, turned with the eye line."""
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape != (68, 2):
        raise NadaError(
            f"landmarks: expected 68 (x, y) points as dlib gives them, got shape {list(lm.shape)}"
        )
    eye_left, eye_right = lm[EYE_LEFT].mean(0), lm[EYE_RIGHT].mean(0)
    eye_mid, eye_to_eye = (eye_left + eye_right) / 2, eye_right - eye_left
    mouth = lm[MOUTH_OUTER]
    eye_to_mouth = (mouth[0] + mouth[6]) / 2 - eye_mid
    x = eye_to_eye - np.array([-eye_to_mouth[1], eye_to_mouth[0]])  # the eye line, squared with the mouth
    x = x / np.hypot(*x) * max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.array([-x[1], x[0]])
    c = eye_mid + eye_to_mouth * 0.1
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y]), float(np.hypot(*x) * 2)


def align_face(image: np.ndarray, landmarks: np.ndarray, size: int = 256) -> np.ndarray:
    """uint8 [H, W, 3] and its 68 landmarks -> the aligned face, uint8 [size, size, 3]."""
    from scipy.ndimage import gaussian_filter

    quad, qsize = face_quad(landmarks)
    img = Image.fromarray(np.asarray(image)).convert("RGB")
    shrink = int(np.floor(qsize / size * 0.5))
    if shrink > 1:  # a face far larger than the output: halve the work (and the aliasing) first
        img = img.resize(
            (int(np.rint(img.size[0] / shrink)), int(np.rint(img.size[1] / shrink))), Image.LANCZOS
        )
        quad, qsize = quad / shrink, qsize / shrink
    border = max(int(np.rint(qsize * 0.1)), 3)
    box = _bounds(quad)
    box = (
        max(box[0] - border, 0),
        max(box[1] - border, 0),
        min(box[2] + border, img.size[0]),
        min(box[3] + border, img.size[1]),
    )
    if box[2] - box[0] < img.size[0] or box[3] - box[1] < img.size[1]:
        img = img.crop(box)
        quad = quad - box[:2]
    left, top, right, bottom = _bounds(quad)
    pad = (
        max(border - left, 0),
        max(border - top, 0),
        max(right - img.size[0] + border, 0),
        max(bottom - img.size[1] + border, 0),
    )
    if max(pad) > border - 4:  # the square leaves the photo: fill by reflection, blurred towards the edge
        pad = np.maximum(pad, int(np.rint(qsize * 0.3)))
        arr = np.pad(np.float32(img), ((pad[1], pad[3]), (pad[0], pad[2]), (0, 0)), "reflect")
        h, w, _ = arr.shape
        yy, xx, _ = np.ogrid[:h, :w, :1]
        into_pad = np.maximum(
            1.0 - np.minimum(np.float32(xx) / pad[0], np.float32(w - 1 - xx) / pad[2]),
            1.0 - np.minimum(np.float32(yy) / pad[1], np.float32(h - 1 - yy) / pad[3]),
        )
        blur = qsize * 0.02
        arr += (gaussian_filter(arr, [blur, blur, 0]) - arr) * np.clip(into_pad * 3.0 + 1.0, 0.0, 1.0)
        arr += (np.median(arr, axis=(0, 1)) - arr) * np.clip(into_pad, 0.0, 1.0)
        img = Image.fromarray(np.uint8(np.clip(np.rint(arr), 0, 255)), "RGB")
        quad = quad + pad[:2]
    out = img.transform((size, size), Image.QUAD, (quad + 0.5).flatten(), Image.BILINEAR)
    return np.asarray(out)


def _bounds(quad: np.ndarray) -> tuple[int, int, int, int]:
    return (
        int(np.floor(quad[:, 0].min())),
        int(np.floor(quad[:, 1].min())),
        int(np.ceil(quad[:, 0].max())),
        int(np.ceil(quad[:, 1].max())),
    )


def _dlib(shape_predictor: str | Path):
    """The dlib module, or a one-line refusal naming the shape predictor that needs it."""
    try:
        import dlib
    except ImportError:
        raise FieldError(
            f"{{shape_predictor}} '{shape_predictor}': face detection needs dlib (pip install dlib)"
        ) from None
    return dlib


def check_face_detection(shape_predictor: str | Path) -> None:
    """Before any photo is read: dlib is installed and its model file is there, so that a batch or a
    page started with one learns it at once, not at its first photo."""
    _dlib(shape_predictor)
    if not Path(shape_predictor).is_file():
        raise FieldError(
            f"{{shape_predictor}} '{shape_predictor}': no such file; give dlib's "
            "shape_predictor_68_face_landmarks.dat"
        )


def detect_landmarks(image: np.ndarray, shape_predictor: str, name: str = "image") -> np.ndarray:
    """68 landmarks of the largest face dlib's HOG detector finds, by the shape-predictor file given
    (dlib's shape_predictor_68_face_landmarks.dat). dlib is optional: pip install dlib."""
    dlib = _dlib(shape_predictor)
    faces = dlib.get_frontal_face_detector()(np.asarray(image), 1)
    if len(faces) == 0:
        raise FieldError(f"{{align}} {name}: no face found; give its landmarks with {{landmarks}} FILE.npy")
    face = max(faces, key=lambda r: r.width() * r.height())
    shape = dlib.shape_predictor(str(shape_predictor))(np.asarray(image), face)
    return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)


def read_landmarks(path: str) -> np.ndarray:
    """A .npy of 68 (x, y) points (any detector's, in the image's pixels)."""
    try:
        lm = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise FieldError(f"{{landmarks}} '{path}': not a readable .npy of 68 x 2 points ({exc})") from None
    if lm.shape != (68, 2):
        raise FieldError(f"{{landmarks}} '{path}': expected 68 x 2 points, got shape {list(lm.shape)}")
    return lm


def read_photos(
    images: Sequence[str | Path],
    size: int,
    align: bool = False,
    shape_predictor: str | Path | None = None,
    landmarks: Sequence[str | Path] | None = None,
) -> list[np.ndarray]:
    """Each image file as uint8 [size, size, 3]: its centre square, or with `align` (dlib's
    68-landmark `shape_predictor`) or `landmarks` (one file per image) the FFHQ-aligned face, as the
    encoders were trained on."""
    if landmarks and len(landmarks) != len(images):
        raise FieldError(
            f"{{landmarks}}: {len(landmarks)} files for {len(images)} images; give one per image"
        )
    if not (align or landmarks):
        return [read_image(p, size) for p in images]
    if not landmarks:
        if shape_predictor is None:
            raise FieldError(
                "{align}: give dlib's 68-landmark model with {shape_predictor} FILE, or {landmarks}"
            )
        check_face_detection(shape_predictor)
    out = []
    for i, path in enumerate(images):
        photo = read_rgb(path)
        lm = (
            read_landmarks(str(landmarks[i]))
            if landmarks
            else detect_landmarks(photo, str(shape_predictor), str(path))
        )
        out.append(align_face(photo, lm, size))
    return out
