"""The console scripts as a user runs them: subprocesses, exit codes, files."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image


def run(args, env_extra=None):
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, "-c", f"import sys; from {args[0]} import main_entry; sys.argv[0]='{args[1]}'; main_entry()", *args[2:]],
                          capture_output=True, text=True, env=env, timeout=600)


TRAIN = ("nada_train.cli.train", "nada-train")
GENERATE = ("nada_train.cli.generate", "nada-generate")


def test_train_then_generate_end_to_end(tmp_path, rosinality_ckpt, tiny_clip_spec, clip_config_dir):
    env = {"NADA_CLIP_CONFIG_DIR": str(clip_config_dir)}
    out = tmp_path / "run"
    r = run([*TRAIN, "--generator", str(rosinality_ckpt), "--target", "pencil sketch", "--clip", tiny_clip_spec,
             "--iterations", "3", "--out", str(out), "--n-sample", "3", "--quiet", "--device", "cpu"], env)
    assert r.returncode == 0, r.stderr
    assert {p.name for p in out.iterdir()} >= {"generator.safetensors", "manifest.json", "samples", "log.jsonl", "state"}
    grid = np.asarray(Image.open(out / "samples" / "step-000003.png"))
    assert grid.shape == (2 * 32 + 2, 3 * 32 + 4, 3)  # frozen row above adapted row, 3 columns
    for source, name in ((rosinality_ckpt, "base"), (out, "adapted")):
        r = run([*GENERATE, str(source), "--seeds", "0-1,5", "--truncation", "0.7", "--out", str(tmp_path / name), "--grid"], env)
        assert r.returncode == 0, r.stderr
        assert sorted(p.name for p in (tmp_path / name).iterdir()) == ["grid.png", "seed0000.png", "seed0001.png", "seed0005.png"]
    a = np.asarray(Image.open(tmp_path / "base" / "seed0005.png")).astype(int)
    b = np.asarray(Image.open(tmp_path / "adapted" / "seed0005.png")).astype(int)
    assert a.shape == (32, 32, 3) and np.abs(a - b).max() > 0  # adapted generator differs

    r = run([*TRAIN, "--resume", str(out), "--iterations", "4", "--quiet"], env)
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "manifest.json").read_text())["iterations_done"] == 4


@pytest.mark.parametrize("args,needle", [
    (["--generator", "/nope.pt", "--target", "x", "--out", "{tmp}/r"], "no such file"),
    (["--generator", "{ckpt}", "--target", "photo", "--out", "{tmp}/r"], "both 'photo'"),
    (["--generator", "{ckpt}", "--target", "x", "--out", "{tmp}/r", "--clip", "ViT-B/32"], "unknown CLIP model"),
    (["--generator", "{ckpt}", "--target", "x"], "--out is required"),
    (["--generator", "{ckpt}", "--target", "x", "--out", "{tmp}/r", "--global-weight", "-1"], "--global-weight -1.0"),
    (["--generator", "{ckpt}", "--target", "x", "--out", "{tmp}/r", "--clip", "ViT-B-32:random", "--clip-weight", "1", "--clip-weight", "2"], "one weight per model"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, rosinality_ckpt, args, needle):
    args = [a.format(tmp=tmp_path, ckpt=rosinality_ckpt) for a in args]
    r = run([*TRAIN, *args])
    assert r.returncode == 2, (r.stdout, r.stderr)
    errors = [line for line in r.stderr.splitlines() if line.startswith("nada-train: error:")]
    assert len(errors) == 1 and needle in errors[0], r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "r").exists()


def test_generate_bad_seeds(rosinality_ckpt, tmp_path):
    r = run([*GENERATE, str(rosinality_ckpt), "--seeds", "5-2", "--out", str(tmp_path)])
    assert r.returncode == 2 and "runs backwards" in r.stderr
