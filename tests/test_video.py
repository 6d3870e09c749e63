"""Latent-walk videos: the frames' latents, the frames against nada-generate's images, and the
files decoded again (mp4 through PyAV, gif through Pillow)."""

import numpy as np
import pytest

from nada_core.errors import NadaError
from nada_core.seeds import z_batch
from nada_train.generator.inference import render
from nada_train.images import psnr
from nada_train.video import domain_walk, latent_walk, morph_frames, slerp, walk_latents, write_video
from tests.conftest import tiny_generator


def test_the_walk_starts_and_ends_on_the_seeds_and_keeps_the_latents_norm():
    z = walk_latents([3, 8, 5], 64, 6)
    seeds = z_batch([3, 8, 5], 64)
    assert z.shape == (13, 64)  # 6 frames from each seed to the next, then the last seed
    np.testing.assert_array_equal(z[[0, 6, 12]], seeds)
    norms = np.linalg.norm(z, axis=1)
    lerp = np.linalg.norm((seeds[0] + seeds[1]) / 2)
    # slerp keeps the norm between the endpoints'; the straight line's middle is much shorter
    assert norms.min() >= 0.97 * np.linalg.norm(seeds, axis=1).min() and lerp < 0.8 * norms[3]
    np.testing.assert_allclose(slerp(seeds[0], seeds[0], 0.5), seeds[0], rtol=1e-6)  # parallel: linear
    with pytest.raises(NadaError, match=r"^seeds: a walk needs at least 2 seeds, got 1$"):
        walk_latents([3], 64, 6)
    with pytest.raises(NadaError, match=r"^frames 0: at least 1 frame from one seed to the next$"):
        walk_latents([3, 4], 64, 0)


def test_the_walks_frames_at_the_seeds_are_nada_generates_images():
    import nada
    from nada_train.checkpoints import LoadedGenerator

    g = tiny_generator()
    frames = latent_walk(g, [0, 4], frames_per_seed=3, truncation=0.7)
    loaded = LoadedGenerator(g, "tiny", "random", None)
    np.testing.assert_array_equal(nada.latent_walk(loaded, [0, 4], frames_per_seed=3, truncation=0.7), frames)
    assert frames.shape == (4, 32, 32, 3) and frames.dtype == np.uint8
    np.testing.assert_array_equal(frames[[0, -1]], render(g, [0, 4], 0.7))
    assert np.abs(frames[1].astype(int) - frames[0].astype(int)).max() > 0  # it moves


def world_generator():
    """Images as a video carries them: smooth (a random generator's are noise, which H.264's 4:2:0
    colour cannot keep)."""
    from nada_train.checkpoints import load_generator
    from nada_world.models import GENERATOR_WEIGHTS

    return load_generator(GENERATOR_WEIGHTS).generator


def test_videos_decode_to_the_frames_written(tmp_path):
    """mp4: every frame back, the size kept (odd sides padded by one pixel for yuv420p), each frame
    within a few levels on average (H.264's 4:2:0 colour costs the sharpest edges more); gif: every
    frame and the size. Other suffixes and frame rates are refused."""
    import av
    from PIL import Image, ImageSequence

    frames = latent_walk(world_generator(), [1, 2, 3], frames_per_seed=4)
    write_video(frames, tmp_path / "walk.mp4", fps=12)
    with av.open(str(tmp_path / "walk.mp4")) as c:
        stream = c.streams.video[0]
        assert stream.codec_context.name == "h264" and float(stream.average_rate) == 12
        got = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    assert got.shape == frames.shape
    for a, b in zip(got, frames):
        assert np.abs(a.astype(int) - b.astype(int)).mean() <= 3 and psnr(a, b, 255.0) >= 30
    write_video(frames[:, :31, :29], tmp_path / "odd.mp4", fps=12)
    with av.open(str(tmp_path / "odd.mp4")) as c:
        assert next(c.decode(video=0)).to_ndarray(format="rgb24").shape == (32, 30, 3)
    assert frames.shape[1:] == (64, 64, 3)
    write_video(frames, tmp_path / "walk.gif", fps=12)
    gif = [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(Image.open(tmp_path / "walk.gif"))]
    assert len(gif) == len(frames) and gif[0].shape == (64, 64, 3)
    with pytest.raises(NadaError, match=r"walk\.avi': write \.mp4 or \.gif$"):
        write_video(frames, tmp_path / "walk.avi")
    with pytest.raises(NadaError, match=r"^fps 0: give a positive frame rate$"):
        write_video(frames, tmp_path / "walk.mp4", fps=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["odd.mp4", "walk.gif", "walk.mp4"]  # no leftovers


def test_nada_generate_video_writes_the_walk(tmp_path):
    import av

    from nada_world.models import GENERATOR_WEIGHTS
    from tests.test_cli import run

    g = world_generator()
    out = tmp_path / "walk.mp4"
    args = [str(GENERATOR_WEIGHTS), "--seeds", "0-2", "--truncation", "0.7", "--video", str(out)]
    r = run(["nada_train.cli.generate", "nada-generate", *args, "--frames", "5", "--fps", "10"])
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"wrote 11 frames (1.1 s at 10 fps) to {out}")
    with av.open(str(out)) as c:
        first = next(c.decode(video=0)).to_ndarray(format="rgb24")
    assert np.abs(first.astype(int) - render(g, [0], 0.7)[0].astype(int)).mean() <= 3
    r = run(["nada_train.cli.generate", "nada-generate", args[0], "--seeds", "4", "--video", str(out)])
    assert (
        r.returncode == 2
        and r.stderr.strip() == "nada-generate: error: --seeds: a walk needs at least 2 seeds, got 1"
    )


def test_domains_walk_side_by_side_and_morph_from_one_to_the_next():
    """domain_walk: each generator's own walk in its column; morph_frames: the first generator's
    images, then blended weights (the middle frame is the average network's drawing), then the
    last generator's; a generator of another architecture is refused."""
    from tests.conftest import adapted_copy

    a = tiny_generator()
    a.set_w_avg(None)
    b = adapted_copy(a, 1)
    b.set_w_avg(a.w_avg + 0.3)  # truncation's centre (not in the state dict) differs too: blended
    grid = domain_walk([a, b], [0, 1], frames_per_seed=2, truncation=0.7)
    assert grid.shape == (3, 32, 64, 3)
    np.testing.assert_array_equal(grid[:, :, :32], latent_walk(a, [0, 1], 2, 0.7))
    np.testing.assert_array_equal(grid[:, :, 32:], latent_walk(b, [0, 1], 2, 0.7))
    frames = morph_frames([a, b], [3, 4], frames_per_domain=2, truncation=0.7)
    assert frames.shape == (3, 32, 64, 3)
    np.testing.assert_array_equal(frames[0], np.concatenate(list(render(a, [3, 4], 0.7)), axis=1))
    np.testing.assert_array_equal(frames[-1], np.concatenate(list(render(b, [3, 4], 0.7)), axis=1))
    middle = tiny_generator()
    middle.load_state_dict({k: (v + b.state_dict()[k]) / 2 for k, v in a.state_dict().items()})
    middle.set_w_avg((a.w_avg + b.w_avg) / 2)
    want = np.concatenate(list(render(middle, [3, 4], 0.7)), axis=1)
    assert np.abs(frames[1].astype(int) - want.astype(int)).max() <= 1
    assert np.abs(frames[1].astype(int) - frames[0].astype(int)).max() > 5
    with pytest.raises(NadaError, match=r"generator 2 is not of the first one's architecture"):
        morph_frames([a, tiny_generator(size=16)], [3], 2)
    with pytest.raises(
        NadaError, match=r"the generators draw 32 px, 16 px; side by side they must be one height"
    ):
        domain_walk([a, tiny_generator(size=16)], [0, 1], 2)


def test_nada_generate_puts_several_runs_in_one_video(tmp_path):
    from nada_train.checkpoints import save_safetensors
    from tests.conftest import adapted_copy
    from tests.test_cli import run

    a, b = tiny_generator(), adapted_copy(tiny_generator(), 2)
    for name, g in (("a", a), ("b", b)):
        save_safetensors(g, tmp_path / f"{name}.safetensors")
    paths = [str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors")]
    generate = ["nada_train.cli.generate", "nada-generate"]
    r = run(
        [*generate, *paths, "--seeds", "0-1", "--video", str(tmp_path / "m.gif"), "--morph", "--frames", "3"]
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"wrote 4 frames (0.2 s at 24 fps) to {tmp_path / 'm.gif'}")
    r = run([*generate, *paths, "--seeds", "0-1", "--video", str(tmp_path / "g.gif"), "--frames", "3"])
    assert r.returncode == 0 and r.stdout.startswith(
        f"wrote 4 frames (0.2 s at 24 fps) to {tmp_path / 'g.gif'}"
    )
    r = run([*generate, *paths, "--seeds", "0-1", "--out", str(tmp_path / "pngs")])
    assert r.returncode == 2 and r.stderr.strip() == (
        "nada-generate: error: CHECKPOINT: give one checkpoint for PNGs; several go into one --video"
    )


def test_a_runs_samples_become_a_time_lapse(tmp_path):
    from PIL import Image

    from nada_train.video import timelapse

    (tmp_path / "samples").mkdir()
    grids = np.random.RandomState(0).randint(0, 256, (3, 20, 30, 3)).astype(np.uint8)
    for step, g in zip((0, 50, 100), grids):
        Image.fromarray(np.repeat(np.repeat(g, 4, 0), 4, 1)).save(
            tmp_path / "samples" / f"step-{step:06d}.png"
        )
    with pytest.raises(NadaError, match=r"no sample grids"):
        timelapse(tmp_path / "elsewhere")
    import av

    with av.open(str(timelapse(tmp_path))) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 3 and frames[0].shape == (80, 120, 3)
    firsts = [np.repeat(np.repeat(g, 4, 0), 4, 1) for g in grids]
    assert all(
        np.abs(f.astype(int) - g.astype(int)).mean() < np.abs(f.astype(int) - h.astype(int)).mean()
        for f, g, h in zip(frames, firsts, firsts[1:] + firsts[:1])
    )  # each frame its own grid, in order
