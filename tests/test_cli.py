"""The console scripts as a user runs them: subprocesses, exit codes, files."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image


def run(args, env_extra=None):
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run(
        [
            sys.executable,
            "-c",
            f"import sys; from {args[0]} import main_entry; sys.argv[0]='{args[1]}'; main_entry()",
            *args[2:],
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


TRAIN = ("nada_train.cli.train", "nada-train")
GENERATE = ("nada_train.cli.generate", "nada-generate")


def test_train_then_generate_end_to_end(tmp_path, rosinality_ckpt, tiny_clip_spec, clip_config_dir):
    env = {"NADA_CLIP_CONFIG_DIR": str(clip_config_dir)}
    out = tmp_path / "run"
    r = run(
        [
            *TRAIN,
            "--generator",
            str(rosinality_ckpt),
            "--target",
            "pencil sketch",
            "--clip",
            tiny_clip_spec,
            "--iterations",
            "3",
            "--out",
            str(out),
            "--n-sample",
            "3",
            "--sample-every",
            "2",
            "--samples-video",
            "--quiet",
            "--device",
            "cpu",
        ],
        env,
    )
    assert r.returncode == 0, r.stderr
    assert {p.name for p in out.iterdir()} >= {
        "generator.safetensors",
        "manifest.json",
        "samples",
        "samples.mp4",
        "log.jsonl",
        "state",
    }
    grid = np.asarray(Image.open(out / "samples" / "step-000003.png"))
    assert grid.shape == (2 * 32 + 2, 3 * 32 + 4, 3)  # frozen row above adapted row, 3 columns
    import av

    with av.open(str(out / "samples.mp4")) as c:  # the time-lapse: a frame per grid, in order
        lapse = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    grids = sorted((out / "samples").glob("step-*.png"))
    assert [p.name for p in grids] == ["step-000000.png", "step-000002.png", "step-000003.png"]
    assert len(lapse) == 3 and lapse[-1].shape == grid.shape
    first = np.asarray(Image.open(grids[0])).astype(int)
    assert np.abs(lapse[-1] - grid.astype(int)).mean() < np.abs(lapse[-1] - first).mean()  # the last grid
    for source, name in ((rosinality_ckpt, "base"), (out, "adapted")):
        r = run(
            [
                *GENERATE,
                str(source),
                "--seeds",
                "0-1,5",
                "--truncation",
                "0.7",
                "--out",
                str(tmp_path / name),
                "--grid",
            ],
            env,
        )
        assert r.returncode == 0, r.stderr
        assert sorted(p.name for p in (tmp_path / name).iterdir()) == [
            "grid.png",
            "seed0000.png",
            "seed0001.png",
            "seed0005.png",
        ]
    a = np.asarray(Image.open(tmp_path / "base" / "seed0005.png")).astype(int)
    b = np.asarray(Image.open(tmp_path / "adapted" / "seed0005.png")).astype(int)
    assert a.shape == (32, 32, 3) and np.abs(a - b).max() > 0  # adapted generator differs

    r = run([*TRAIN, "--resume", str(out), "--iterations", "4", "--quiet"], env)
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "manifest.json").read_text())["iterations_done"] == 4


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--generator", "/nope.pt", "--target", "x", "--out", "{tmp}/r"], "no such file"),
        (["--generator", "{ckpt}", "--target", "photo", "--out", "{tmp}/r"], "both 'photo'"),
        (
            ["--generator", "{ckpt}", "--target", "x", "--out", "{tmp}/r", "--clip", "ViT-B/32"],
            "unknown CLIP model",
        ),
        (["--generator", "{ckpt}", "--target", "x"], "--out is required"),
        (
            ["--generator", "{ckpt}", "--target", "x", "--out", "{tmp}/r", "--global-weight", "-1"],
            "--global-weight -1.0",
        ),
        (
            ["--generator", "{ckpt}", "--target", "x", "--out", "{tmp}/r", "--anchor-weight", "nan"],
            "--anchor-weight nan: must be 0 (off) or a positive number",
        ),
        (
            ["--generator", "{ckpt}", "--target", "x", "--target", "y"],
            "--out is required: a new folder for the runs, one per target",
        ),
        (
            ["--generator", "{ckpt}", "--targets", "{tmp}/none.txt", "--out", "{tmp}/r"],
            "none.txt': no such file",
        ),
        (
            [
                "--generator",
                "{ckpt}",
                "--target",
                "x",
                "--out",
                "{tmp}/r",
                "--clip",
                "ViT-B-32:random",
                "--clip-weight",
                "1",
                "--clip-weight",
                "2",
            ],
            "one weight per model",
        ),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, rosinality_ckpt, args, needle, monkeypatch, capsys):
    args = [a.format(tmp=tmp_path, ckpt=rosinality_ckpt) for a in args]
    code, lines = in_process(monkeypatch, capsys, "nada-train", *args)
    assert (
        code == 2 and len(lines) == 1 and lines[0].startswith("nada-train: error:") and needle in lines[0]
    ), lines
    assert not (tmp_path / "r").exists()


def test_generate_bad_seeds(rosinality_ckpt, tmp_path):
    """As a user meets it, from the installed command's process: one line, exit 2, nothing written."""
    r = run([*GENERATE, str(rosinality_ckpt), "--seeds", "5-2", "--out", str(tmp_path / "out")])
    assert (
        r.returncode == 2
        and r.stderr.splitlines()[-1]
        == "nada-generate: error: --seeds '5-2': range 5-2 runs backwards; write 2-5"
    )
    assert "Traceback" not in r.stderr and not (tmp_path / "out").exists()


def run_in_process(monkeypatch, capsys, prog: str, *args: str) -> tuple[int, str, str]:
    """A command run through its main_entry (what the console script calls) in this process:
    (exit status, stdout, stderr). An exception that escapes main_entry fails the test, as a
    traceback would show the user."""
    import importlib

    monkeypatch.setattr(sys, "argv", [prog, *args])
    code = 0
    try:
        importlib.import_module(CLI_MODULES[prog]).main_entry()
    except SystemExit as exc:
        code = exc.code or 0
    out, err = capsys.readouterr()
    return code, out, err


def in_process(monkeypatch, capsys, prog: str, *args: str) -> tuple[int, list[str]]:
    """run_in_process: (exit status, stderr lines)."""
    code, _, err = run_in_process(monkeypatch, capsys, prog, *args)
    return code, err.strip().splitlines()


@pytest.mark.parametrize(
    "prog,args,message",
    [
        (
            "nada-generate",
            ["{ckpt}", "--seeds", "1,,2"],
            "--seeds '1,,2': write seeds as 0-3,7 (non-negative integers and ranges)",
        ),
        (
            "nada-generate",
            ["{ckpt}", "--seeds", "-3"],
            "--seeds '-3': write seeds as 0-3,7 (non-negative integers and ranges)",
        ),
        (
            "nada-generate",
            ["{ckpt}", "--seeds", "a-b"],
            "--seeds 'a-b': write seeds as 0-3,7 (non-negative integers and ranges)",
        ),
        ("nada-generate", ["{ckpt}", "--seeds", "3-1"], "--seeds '3-1': range 3-1 runs backwards; write 1-3"),
        ("nada-generate", ["{ckpt}", "--seeds", "4294967296"], "seed 4294967296: must be in 0..2**32-1"),
        ("nada-generate", ["{ckpt}", "--noise", "loud"], "--noise loud: choose const, random or none"),
        (
            "nada-generate",
            ["{ckpt}", "--precision", "fp8"],
            "--precision fp8: choose auto, fp32, fp16 or bf16",
        ),
        (
            "nada-train",
            ["--generator", "{ckpt}", "--target", "x", "--out", "{tmp}/r", "--crop", "1,2,3"],
            "--crop '1,2,3': give four integers LEFT,TOP,RIGHT,BOTTOM, e.g. --crop 0,64,512,448",
        ),
        (
            "nada-train",
            ["--generator", "{ckpt}", "--target", "x", "--out", "{tmp}/r", "--crop", "a,b,c,d"],
            "--crop 'a,b,c,d': give four integers LEFT,TOP,RIGHT,BOTTOM, e.g. --crop 0,64,512,448",
        ),
        (
            "nada-train",
            ["--resume", "{tmp}", "--lr", "0.1"],
            "--resume continues a run with the settings it started with; --lr cannot be given with it (only "
            "--iterations, a new total)",
        ),
        (
            "nada-train",
            ["--resume", "{tmp}", "--clip-weight", "2"],
            "--resume continues a run with the settings it started with; --clip-weight cannot be given with "
            "it (only --iterations, a new total)",
        ),
        (
            "nada-train",
            ["--eval-only", "{tmp}"],
            "--eval-only '{tmp}': no manifest.json there; is it a nada-train run directory?",
        ),
        (
            "nada-train",
            ["--eval-only", "{tmp}/own"],
            "--eval-only '{tmp}/own': metrics need a built-in base that judges its runs; this run adapted "
            "{ckpt}",
        ),
        (
            "nada-train",
            ["--eval-only", "{tmp}/guided"],
            "--eval-only '{tmp}/guided': image-guided runs have no target to judge",
        ),
        (
            "nada-client",
            ["--model", "m", "--seeds", "x"],
            "--seeds 'x': write seeds as 0-3,7 (non-negative integers and ranges)",
        ),
    ],
)
def test_bad_values_are_one_whole_line_exit_2(
    monkeypatch, capsys, tmp_path, rosinality_ckpt, prog, args, message
):
    """Values a command cannot take: the whole message on one line, exit status 2, nothing written.
    --eval-only is asked of a folder that is no run, a run on a base that judges nothing, and an
    image-guided run on the built-in world (no target style to judge)."""
    from nada_train.bases import default_base

    for name, generator, target in (
        ("own", str(rosinality_ckpt), "sketch"),
        ("guided", str(default_base().generator), None),
    ):
        (tmp_path / name).mkdir()
        (tmp_path / name / "manifest.json").write_text(
            json.dumps({"format": "nada-run/1", "target": target, "arguments": {"generator": generator}})
        )
    fill = lambda text: text.format(tmp=tmp_path, ckpt=rosinality_ckpt)  # noqa: E731
    before = sorted(p.name for p in tmp_path.iterdir())
    code, lines = in_process(
        monkeypatch,
        capsys,
        prog,
        *map(fill, args),
        *(["--out", str(tmp_path / "out")] if prog != "nada-train" else []),
    )
    assert (code, lines) == (2, [f"{prog}: error: {fill(message)}"])
    assert sorted(p.name for p in tmp_path.iterdir()) == before


CLI_MODULES = {
    "nada-train": "nada_train.cli.train",
    "nada-generate": "nada_train.cli.generate",
    "nada-edit": "nada_train.cli.edit",
    "nada-export": "nada_export.cli.export",
    "nada-serve": "nada_serve.cli.serve",
    "nada-client": "nada_serve.cli.client",
    "nada-app": "nada_app.cli",
}


def test_nada_app_refuses_a_shape_predictor_it_cannot_use_before_it_starts(monkeypatch, capsys, tmp_path):
    """--shape-predictor is checked before the page starts (the photo tab's align checkbox would
    otherwise fail at the first photo): without dlib, then with dlib (a stand-in module) and no file."""
    import types

    predictor = tmp_path / "sp.dat"
    args = ["--shape-predictor", str(predictor), "--runs", str(tmp_path / "runs"), "--port", "0"]
    monkeypatch.setattr(  # reached, the page would serve until stopped
        "nada_app.page.build_page",
        lambda *a, **k: pytest.fail("the page started: --shape-predictor unchecked"),
    )
    monkeypatch.setitem(sys.modules, "dlib", None)  # import dlib raises ImportError
    code, lines = in_process(monkeypatch, capsys, "nada-app", *args)
    assert (code, lines) == (
        2,
        [f"nada-app: error: --shape-predictor '{predictor}': face detection needs dlib (pip install dlib)"],
    )
    monkeypatch.setitem(sys.modules, "dlib", types.SimpleNamespace())
    code, lines = in_process(monkeypatch, capsys, "nada-app", *args)
    assert (code, lines) == (
        2,
        [
            f"nada-app: error: --shape-predictor '{predictor}': no such file; give dlib's "
            "shape_predictor_68_face_landmarks.dat"
        ],
    )
    assert list(tmp_path.iterdir()) == []  # no page, no runs folder


@pytest.mark.parametrize(
    "prog,args,needle",
    [
        ("nada-train", ["--bogus"], "No such option: --bogus"),
        ("nada-train", ["--iterations", "abc"], "'--iterations'"),
        ("nada-train", ["--out"], "'--out' requires an argument"),
        ("nada-generate", [], "Missing argument"),
        ("nada-generate", ["ckpt.pt", "--truncation", "high"], "'--truncation'"),
        ("nada-generate", ["ckpt.pt", "--bogus"], "No such option: --bogus"),
        ("nada-export", [], "Missing argument"),
        ("nada-export", ["ckpt.pt", "--gpu", "0"], "No such option: --gpu"),
        ("nada-export", ["ckpt.pt", "--max-batch", "many"], "'--max-batch'"),
        ("nada-serve", [], "Missing argument"),
        ("nada-serve", ["repo", "--grpc-port", "x"], "'--grpc-port'"),
        ("nada-serve", ["repo", "--bogus"], "No such option: --bogus"),
        ("nada-client", [], "Missing option '--model'"),
        ("nada-client", ["--model", "m", "--batch", "x"], "'--batch'"),
        ("nada-client", ["--model", "m", "--bogus"], "No such option: --bogus"),
    ],
)
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


def test_nada_adapt_is_nada_train_and_generate_is_nada_generate(
    tmp_path, rosinality_ckpt, tiny_clip_spec, monkeypatch, capsys
):
    """The API and the commands are one path: the same options make the same run, bit for bit, and a
    generator's images are the PNGs nada-generate writes of it."""
    from safetensors.torch import load_file

    import nada

    run = nada.adapt(
        str(rosinality_ckpt),
        target="pencil sketch",
        out=tmp_path / "api",
        clip=[tiny_clip_spec],
        progress=False,
        iterations=2,
        n_sample=2,
        sample_every=1,
        seed=5,
        mixing=0.5,
    )
    code, _, err = run_in_process(
        monkeypatch,
        capsys,
        "nada-train",
        "--generator",
        str(rosinality_ckpt),
        "--target",
        "pencil sketch",
        "--out",
        str(tmp_path / "cli"),
        "--clip",
        tiny_clip_spec,
        "--iterations",
        "2",
        "--n-sample",
        "2",
        "--sample-every",
        "1",
        "--seed",
        "5",
        "--mixing",
        "0.5",
        "--quiet",
    )
    assert code == 0, err
    cli = nada.Run(tmp_path / "cli")
    mine, theirs = (
        load_file(run.path / "generator.safetensors"),
        load_file(cli.path / "generator.safetensors"),
    )
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert {**run.manifest["arguments"], "out": None} == {**cli.manifest["arguments"], "out": None}
    assert (
        [p.name for p in run.samples]
        == [p.name for p in cli.samples]
        == [f"step-{i:06d}.png" for i in range(3)]
    )
    images = run.generator.generate("0-2,5", truncation=0.7)
    code, _, err = run_in_process(
        monkeypatch,
        capsys,
        "nada-generate",
        str(cli.path),
        "--seeds",
        "0-2,5",
        "--truncation",
        "0.7",
        "--out",
        str(tmp_path / "pngs"),
    )
    assert code == 0, err
    pngs = np.stack([np.asarray(Image.open(tmp_path / "pngs" / f"seed{i:04d}.png")) for i in (0, 1, 2, 5)])
    assert images.dtype == np.uint8 and np.array_equal(pngs, images)


def parsed_options(monkeypatch, *args):
    """The TrainOptions nada-train builds from a command line (training itself replaced)."""
    import nada_train.cli.train as cli
    import nada_train.runs as runs

    seen = {}

    def fake_train(opts, resume=False, progress=True, callback=None):
        seen["opts"] = opts
        raise SystemExit(0)

    monkeypatch.setattr(runs, "train", fake_train)
    monkeypatch.setattr(sys, "argv", ["nada-train", *args])
    with pytest.raises(SystemExit):
        cli.main_entry()
    return seen["opts"]


def test_cli_defaults_are_train_options_defaults(monkeypatch, tmp_path):
    from dataclasses import fields

    from nada_train.options import TrainOptions

    opts = parsed_options(
        monkeypatch, "--generator", "random:8", "--target", "sketch", "--out", str(tmp_path / "r")
    )
    reference = TrainOptions(generator="random:8", out=str((tmp_path / "r").resolve()), target="sketch")
    for f in fields(TrainOptions):
        assert getattr(opts, f.name) == getattr(reference, f.name), f.name
    flags = parsed_options(
        monkeypatch,
        "--generator",
        "random:8",
        "--target",
        "sketch",
        "--out",
        str(tmp_path / "r"),
        "--train-torgb",
        "--fused",
        "--no-tf32",
        "--batch",
        "3",
    )
    assert (flags.train_torgb, flags.fused, flags.tf32, flags.batch) == (True, True, False, 3)


def test_builtin_base_settings_fill_what_the_user_left_out(monkeypatch, tmp_path):
    from nada_train.bases import default_base

    base = default_base()
    opts = parsed_options(monkeypatch, "--out", str(tmp_path / "r"))
    want = base.options_for("photo", base.default_target)
    assert opts.generator == str(base.generator.resolve()) and opts.target == base.default_target
    assert all(getattr(opts, k) == v for k, v in want.items())
    assert [str(c) for c in opts.clip] == list(base.clip) and opts.templates == list(base.templates)
    mine = parsed_options(
        monkeypatch, "--out", str(tmp_path / "r"), "--lr", "0.5", "--clip", "ViT-B-32:random"
    )
    assert mine.lr == 0.5 and mine.templates is None  # another CLIP: the ImageNet templates
    named = parsed_options(monkeypatch, "--generator", f"builtin:{base.name}", "--out", str(tmp_path / "r"))
    assert named.generator == opts.generator


def test_nada_client_without_a_server_is_one_line_and_wait_gives_up(monkeypatch, capsys, tmp_path):
    """No server on the port: one line saying so and how to start one; with --wait, it gives up after
    the seconds asked, in one line naming the endpoint, the model and the last thing it saw."""
    import re
    import time

    from nada_serve.server import free_port

    url = f"127.0.0.1:{free_port()}"
    code, lines = in_process(
        monkeypatch, capsys, "nada-client", "--url", url, "--model", "m", "--out", str(tmp_path / "out")
    )
    assert code == 2 and len(lines) == 1, lines
    assert re.fullmatch(
        rf"nada-client: error: --url {url}: no server answers there \(.*Connection refused\); start one with "
        r"nada-serve REPOSITORY, or give --wait SECONDS for one that is starting",
        lines[0],
    ), lines[0]
    t0 = time.monotonic()
    code, lines = in_process(
        monkeypatch,
        capsys,
        "nada-client",
        "--url",
        url,
        "--model",
        "m",
        "--wait",
        "0.6",
        "--out",
        str(tmp_path / "out"),
    )
    assert code == 2 and len(lines) == 1 and 0.6 <= time.monotonic() - t0 < 30
    assert re.fullmatch(
        rf"nada-client: error: --wait 0.6: {url} did not serve 'm' in time \(.*Connection refused\)", lines[0]
    ), lines[0]
    assert not (tmp_path / "out").exists()
