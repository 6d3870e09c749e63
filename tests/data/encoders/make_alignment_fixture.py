"""Make tests/data/encoders/alignment.npz with the authors' own align_face (e4e's utils/alignment.py;
not part of nada, never imported by the tests): a photo, three sets of landmarks (a face inside the
photo, one past its edge, one large enough to be shrunk first) and what align_face makes of each.
dlib is stubbed (the landmarks are given) and PIL.Image.ANTIALIAS, gone from Pillow 10, is LANCZOS,
as it always was."""

import sys
import types

SCRATCH, NADA = "/tmp/encfix/omertov+encoder4editing", "/work/main"


def landmarks(cx: float, cy: float, scale: float, angle: float):
    """68 points whose eyes (36-47) and mouth corners (48, 54) are where a face's would be."""
    import numpy as np

    lm = np.zeros((68, 2))
    t6, t12 = np.linspace(0, 2 * np.pi, 6, endpoint=False), np.linspace(np.pi, 3 * np.pi, 12, endpoint=False)
    ring = np.stack([np.cos(t6), np.sin(t6)], 1)
    lm[36:42] = [-0.35, -0.2] + 0.08 * ring
    lm[42:48] = [0.35, -0.2] + 0.08 * ring
    lm[48:60] = [0, 0.45] + np.stack([0.25 * np.cos(t12), 0.08 * np.sin(t12)], 1)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return (lm @ rot.T) * scale + [cx, cy]


def main(out: str) -> None:
    sys.path[:0] = [SCRATCH, NADA]
    sys.modules["dlib"] = types.ModuleType("dlib")
    import numpy as np
    import PIL.Image
    from PIL import Image

    PIL.Image.ANTIALIAS = PIL.Image.LANCZOS
    from utils import alignment

    from tests.encoder_fixtures import photos

    photo = photos(1, 512, seed=11)[0]
    Image.fromarray(photo).save("/tmp/encfix/face.png")
    cases = np.stack(
        [landmarks(256, 240, 90, 0.1), landmarks(60, 420, 80, -0.3), landmarks(250, 260, 400, 0.05)]
    )
    aligned = []
    for lm in cases:
        alignment.get_landmark = lambda filepath, predictor, lm=lm: lm
        aligned.append(np.asarray(alignment.align_face("/tmp/encfix/face.png", None)))
    np.savez_compressed(out, landmarks=cases, aligned=np.stack(aligned))
    print([a.shape for a in aligned])


if __name__ == "__main__":
    main(sys.argv[1])
