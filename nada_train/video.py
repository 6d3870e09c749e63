"""Videos of generators: a latent walk through seeds in order (slerp between their z, so that every
frame is a latent of the usual norm; the first frame is the first seed's image, the last the last's,
exactly as nada-generate draws them), the same walk by several domains side by side, a morph that
blends weights from one domain to the next, and a run's sample grids as a time-lapse; written as
mp4 (H.264 through PyAV, which brings its own ffmpeg from PyPI) or gif (Pillow)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch

from nada_core.errors import FieldError
from nada_core.fileio import atomic_path
from nada_core.seeds import z_batch
from nada_train.checkpoints import LoadedGenerator
from nada_train.generator import StyleGenerator
from nada_train.generator.inference import render_z

VIDEO_SUFFIXES = (".mp4", ".gif")


def slerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """Spherical interpolation between latents a and b (rows), t in [0, 1]; linear where they are
    (nearly) parallel."""
    na, nb = np.linalg.norm(a, axis=-1, keepdims=True), np.linalg.norm(b, axis=-1, keepdims=True)
    cos = np.clip(np.sum(a * b, axis=-1, keepdims=True) / (na * nb), -1.0, 1.0)
    omega = np.arccos(cos)
    if np.all(np.sin(omega) < 1e-6):
        return (1 - t) * a + t * b
    return (np.sin((1 - t) * omega) * a + np.sin(t * omega) * b) / np.sin(omega)


def walk_latents(seeds: list[int], z_dim: int, frames_per_seed: int) -> np.ndarray:
    """z of every frame [F, z_dim]: frames_per_seed frames from each seed towards the next, then the
    last seed's own z; F = (len(seeds) - 1) * frames_per_seed + 1."""
    if len(seeds) < 2:
        raise FieldError(f"{{seeds}}: a walk needs at least 2 seeds, got {len(seeds)}")
    if frames_per_seed < 1:
        raise FieldError(f"{{frames}} {frames_per_seed}: at least 1 frame from one seed to the next")
    z = z_batch(seeds, z_dim)
    steps = [  # each seed's own z exactly, then the way to the next
        z[i] if k == 0 else slerp(z[i], z[i + 1], k / frames_per_seed)
        for i in range(len(seeds) - 1)
        for k in range(frames_per_seed)
    ]
    return np.stack([*steps, z[-1]]).astype(np.float32)


def latent_walk(
    generator: StyleGenerator | LoadedGenerator,
    seeds: list[int],
    frames_per_seed: int = 24,
    truncation: float = 1.0,
    noise: str = "const",
    batch: int = 8,
) -> np.ndarray:
    """uint8 frames [F, H, W, 3] of the walk through `seeds` (nada-generate's images at the seeds);
    generator: a network or a loaded one (nada.load_generator)."""
    generator = generator.generator if isinstance(generator, LoadedGenerator) else generator
    z = torch.from_numpy(walk_latents(seeds, generator.config.z_dim, frames_per_seed))
    return render_z(generator, z, truncation, noise, batch)


def check_video(path: str | Path, fps: float) -> Path:
    """The video's path, refused in one line unless .mp4 or .gif at a positive frame rate."""
    path = Path(path)
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise FieldError(f"{{video}} '{path}': write .mp4 or .gif")
    if fps <= 0:
        raise FieldError(f"{{fps}} {fps}: give a positive frame rate")
    return path


def write_video(frames: np.ndarray, path: str | Path, fps: float = 24.0) -> Path:
    """uint8 frames [F, H, W, 3] -> `path` (.mp4: H.264, yuv420p, near-lossless; .gif: Pillow's
    palette), written under a temporary name and renamed when complete."""
    path = check_video(path, fps)
    frames = np.asarray(frames)
    with atomic_path(path) as tmp:
        if path.suffix.lower() == ".gif":
            from PIL import Image

            pictures = [Image.fromarray(f) for f in frames]
            duration = max(1, round(1000 / fps))
            pictures[0].save(
                tmp, format="GIF", save_all=True, append_images=pictures[1:], duration=duration, loop=0
            )
        else:
            _write_mp4(frames, tmp, fps)
    return path


def _write_mp4(frames: np.ndarray, path: Path, fps: float) -> None:
    try:
        import av
    except ImportError:
        raise FieldError(
            "{video}: mp4 needs PyAV (pip install av, or nada[video]); or write a .gif"
        ) from None
    from fractions import Fraction

    h, w = frames.shape[1:3]
    # yuv420p (what players take) needs even sides: odd ones get one edge pixel repeated
    padded = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = padded.shape[2], padded.shape[1], "yuv420p"
        stream.options = {"crf": "10"}
        for frame in padded:
            for packet in stream.encode(
                av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            ):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def domain_walk(
    generators: list[StyleGenerator | LoadedGenerator],
    seeds: list[int],
    frames_per_seed: int = 24,
    truncation: float = 1.0,
    noise: str = "const",
) -> np.ndarray:
    """The same walk drawn by each generator, side by side: frames [F, H, W * len(generators), 3]
    (the domains of one base moving together)."""
    walks = [latent_walk(g, seeds, frames_per_seed, truncation, noise) for g in generators]
    if len({w.shape[1] for w in walks}) > 1:
        sizes = ", ".join(f"{w.shape[1]} px" for w in walks)
        raise FieldError(
            f"{{checkpoints}}: the generators draw {sizes}; side by side they must be one height"
        )
    return np.concatenate(walks, axis=2)


def morph_frames(
    generators: list[StyleGenerator | LoadedGenerator],
    seeds: list[int],
    frames_per_domain: int = 24,
    truncation: float = 1.0,
    noise: str = "const",
) -> np.ndarray:
    """Frames [F, H, W * len(seeds), 3]: the seeds' images while the weights blend linearly from each
    generator to the next (as the reference's videos blend whole networks); F = (len(generators) - 1)
    * frames_per_domain + 1, the first frame the first generator's images, the last the last's. The
    generators must share one architecture (domains of one base)."""
    nets = [g.generator if isinstance(g, LoadedGenerator) else g for g in generators]
    if len(nets) < 2:
        raise FieldError(f"{{checkpoints}}: a morph needs at least 2 generators, got {len(nets)}")
    if frames_per_domain < 1:
        raise FieldError(f"{{frames}} {frames_per_domain}: at least 1 frame from one domain to the next")
    states = [{k: v.detach() for k, v in g.state_dict().items()} for g in nets]
    shapes = {k: v.shape for k, v in states[0].items()}
    for i, s in enumerate(states[1:], 1):
        if {k: v.shape for k, v in s.items()} != shapes or nets[i].config != nets[0].config:
            raise FieldError(
                f"{{checkpoints}}: generator {i + 1} is not of the first one's architecture; a morph blends "
                "domains of one base"
            )
    for g in nets:  # truncation's centre, which is not in the state dict: known before blending
        if not g.w_avg_known:
            g.set_w_avg(None)
    work = copy.deepcopy(nets[0]).eval()
    z = torch.from_numpy(z_batch(seeds, work.config.z_dim))
    frames = []
    steps = [(i, k / frames_per_domain) for i in range(len(nets) - 1) for k in range(frames_per_domain)]
    for i, t in [*steps, (len(nets) - 2, 1.0)]:
        if t in (0.0, 1.0):  # the domains themselves, exactly
            drawn = nets[i] if t == 0 else nets[i + 1]
        else:
            a, b = states[i], states[i + 1]
            work.load_state_dict(
                {k: torch.lerp(a[k], b[k], t) if a[k].is_floating_point() else a[k] for k in a}
            )
            work.set_w_avg(torch.lerp(nets[i].w_avg, nets[i + 1].w_avg, t))
            drawn = work
        frames.append(np.concatenate(list(render_z(drawn, z, truncation, noise)), axis=1))
    return np.stack(frames)


def timelapse(run_dir: str | Path, path: str | Path | None = None, fps: float = 4.0) -> Path:
    """A run's sample grids (samples/step-*.png, in order) as one video, RUN/samples.mp4 by default:
    the training as a time-lapse."""
    from PIL import Image

    run_dir = Path(run_dir)
    grids = sorted((run_dir / "samples").glob("step-*.png"))
    if not grids:
        raise FieldError(f"{{run}} '{run_dir}': no sample grids (samples/step-*.png) to make a time-lapse of")
    frames = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in grids])
    return write_video(frames, path or run_dir / "samples.mp4", fps)
