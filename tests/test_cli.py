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
    (["--generator", "{ckpt}", "--target", "x", "--target", "y"], "--out is required: a new folder for the runs, one per target"),
    (["--generator", "{ckpt}", "--targets", "{tmp}/none.txt", "--out", "{tmp}/r"], "none.txt': no such file"),
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


CLI_MODULES = {"nada-train": "nada_train.cli.train", "nada-generate": "nada_train.cli.generate",
               "nada-export": "nada_export.cli.export", "nada-serve": "nada_serve.cli.serve",
               "nada-client": "nada_serve.cli.client"}


@pytest.mark.parametrize("prog,args,needle", [
    ("nada-train", ["--bogus"], "No such option: --bogus"),
    ("nada-train", ["--iterations", "abc"], "'--iterations'"),
    ("nada-train", ["--out"], "'--out' requires an argument"),
    ("nada-generate", [], "Missing argument"),
    ("nada-generate", ["ckpt.pt", "--truncation", "high"], "'--truncation'"),
    ("nada-export", [], "Missing argument"),
    ("nada-export", ["ckpt.pt", "--gpu", "0"], "No such option: --gpu"),
    ("nada-export", ["ckpt.pt", "--max-batch", "many"], "'--max-batch'"),
    ("nada-serve", [], "Missing argument"),
    ("nada-serve", ["repo", "--grpc-port", "x"], "'--grpc-port'"),
    ("nada-client", [], "Missing option '--model'"),
    ("nada-client", ["--model", "m", "--batch", "x"], "'--batch'"),
    ("nada-client", ["--model", "m", "--bogus"], "No such option: --bogus"),
])
def test_usage_errors_are_one_line_exit_2(prog, args, needle, monkeypatch, capsys):
    """Every command, in process (its main_entry, as the console script calls it)."""
    import importlib

    monkeypatch.setattr(sys, "argv", [prog, *args])
    with pytest.raises(SystemExit) as exit_info:
        importlib.import_module(CLI_MODULES[prog]).main_entry()
    out, err = capsys.readouterr()
    assert exit_info.value.code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: ") and needle in lines[0], err
    assert lines[0].endswith(f"(see {prog} --help)") and out == ""


def test_installed_console_script_usage_error():
    import shutil

    script = shutil.which("nada-train", path=os.path.dirname(sys.executable))
    assert script, "nada-train is not installed beside this Python"
    r = subprocess.run([script, "--bogus"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.startswith("nada-train: error: No such option: --bogus"), r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def parsed_options(monkeypatch, *args):
    """The TrainOptions nada-train builds from a command line (training itself replaced)."""
    import nada_train.cli.train as cli

    seen = {}

    def fake_train(opts, resume=False, progress=True):
        seen["opts"] = opts
        raise SystemExit(0)

    monkeypatch.setattr(cli, "train", fake_train)
    monkeypatch.setattr(sys, "argv", ["nada-train", *args])
    with pytest.raises(SystemExit):
        cli.main_entry()
    return seen["opts"]


def test_cli_defaults_are_train_options_defaults(monkeypatch, tmp_path):
    from dataclasses import fields

    from nada_train.trainer import TrainOptions

    opts = parsed_options(monkeypatch, "--generator", "random:8", "--target", "sketch", "--out", str(tmp_path / "r"))
    reference = TrainOptions(generator="random:8", out=str((tmp_path / "r").resolve()), target="sketch")
    for f in fields(TrainOptions):
        assert getattr(opts, f.name) == getattr(reference, f.name), f.name
    flags = parsed_options(monkeypatch, "--generator", "random:8", "--target", "sketch", "--out", str(tmp_path / "r"),
                           "--train-torgb", "--fused", "--no-tf32", "--batch", "3")
    assert (flags.train_torgb, flags.fused, flags.tf32, flags.batch) == (True, True, False, 3)


def test_builtin_base_settings_fill_what_the_user_left_out(monkeypatch, tmp_path):
    from nada_train.bases import default_base

    base = default_base()
    opts = parsed_options(monkeypatch, "--out", str(tmp_path / "r"))
    want = base.options_for("photo", base.default_target)
    assert opts.generator == str(base.generator.resolve()) and opts.target == base.default_target
    assert all(getattr(opts, k) == v for k, v in want.items())
    assert [str(c) for c in opts.clip] == list(base.clip) and opts.templates == list(base.templates)
    mine = parsed_options(monkeypatch, "--out", str(tmp_path / "r"), "--lr", "0.5", "--clip", "ViT-B-32:random")
    assert mine.lr == 0.5 and mine.templates is None  # another CLIP: the ImageNet templates
    named = parsed_options(monkeypatch, "--generator", f"builtin:{base.name}", "--out", str(tmp_path / "r"))
    assert named.generator == opts.generator
