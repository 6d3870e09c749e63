"""The README tells the truth: short enough to read, its option table is TrainOptions' defaults, and
its no-download block runs as written (CI runs it after install.sh has made runs/default)."""

import os
import re
import signal
import socket
import subprocess
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_readme_is_at_most_200_lines():
    assert len(README.splitlines()) <= 200


def option_table() -> dict[str, str]:
    """`--option` -> the default the README's option table gives (a row of two, `--a` / `--b`, gives
    its defaults as `x / y`)."""
    table = {}
    for names, defaults in re.findall(
        r"^\| (`--[a-z0-9-]+`(?: / `--[a-z0-9-]+`)*) \| ([^|]*) \|", README, re.M
    ):
        names, defaults = [n.strip("`") for n in names.split(" / ")], defaults.strip().split(" / ")
        assert len(names) == len(defaults), (names, defaults)
        table.update(zip(names, defaults))
    return table


def test_option_table_defaults_are_train_options_defaults():
    from nada_train.cli.train import D, app

    table = option_table()
    assert len(table) >= 15
    cli_options = {o for p in __import__("typer").main.get_command(app).params for o in p.opts}
    for option, written in table.items():
        assert option in cli_options, option
        field = option[2:].replace("-", "_")
        want = D[field]
        want = "—" if want is None else want[0] if isinstance(want, list) else str(want)
        assert written == want, (option, written, want)
    assert {
        f.name for f in fields(__import__("nada_train.trainer", fromlist=["TrainOptions"]).TrainOptions)
    } >= {o[2:].replace("-", "_") for o in table}


def the_no_download_block() -> str:
    section = README.split("## The whole path, without downloads", 1)[1]
    return re.search(r"```bash\n(.*?)```", section, flags=re.S).group(1)


def port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.skipif(
    not (ROOT / "runs" / "default" / "generator.safetensors").exists(),
    reason="runs/default is made by install.sh's main job (CI runs it first)",
)
def test_the_no_download_block_runs_as_written(tmp_path):
    if not all(port_free(p) for p in (8000, 8001, 8002)):
        pytest.skip("ports 8000-8002 are taken on this machine; the README block uses Triton's defaults")
    block = the_no_download_block()
    for name in ("runs", ".venv"):  # what install.sh left; the block writes out/ and triton_models/ here
        (tmp_path / name).symlink_to(ROOT / name)
    env = dict(os.environ)
    # a failing line ends `bash -e` before `kill %1`: the trap stops the server all the same, so a
    # failure is reported with its output instead of waiting on a pipe the server still holds
    stop_jobs = "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n"
    proc = subprocess.Popen(
        ["bash", "-e", "-c", stop_jobs + block],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=480)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"the README block did not finish in 480 s; its output:\n{out}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, out
    pngs = ["grid.png"] + [f"seed{i:04d}.png" for i in range(8)]
    assert sorted(p.name for p in (tmp_path / "out" / "served").iterdir()) == pngs
    for (
        name
    ) in pngs:  # what the README promises: the served images are nada-generate's (within one 8-bit level)
        served, local = (
            np.asarray(Image.open(tmp_path / "out" / kind / name)).astype(int)
            for kind in ("served", "default")
        )
        assert served.shape == local.shape and np.abs(served - local).max() <= 1, name
    assert "wrote 8 images" in out
    assert port_free(8001)  # `kill %1` stopped the server


def test_block_extraction_finds_the_commands():
    block = the_no_download_block()
    assert block.splitlines()[1].startswith("nada-generate runs/default") and "nada-client" in block


def the_python_block() -> str:
    section = README.split("## From Python", 1)[1]
    return re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)


# what the README names that needs downloads -> what this machine has: the same architectures
# (StyleGAN2 config-f, here at 8 px, and ViT-B/32) with random weights, one step
WITHOUT_DOWNLOADS = {
    '"stylegan2-ffhq-config-f.pt"': '"random:8"',
    '"ViT-B-32"': '"ViT-B-32:random"',
    "iterations=300": "iterations=1",
}


def test_the_python_block_runs_and_equals_the_commands(tmp_path, monkeypatch, capsys):
    """The README's Python, as written but for weights: its images are the PNGs nada-generate writes
    of its run, and the served images are its images. (That nada.adapt's run is nada-train's bit for
    bit: test_cli.py, on a tiny CLIP.)"""
    from tests.conftest import served
    from tests.test_cli import run_in_process

    block = the_python_block()
    for real, here in WITHOUT_DOWNLOADS.items():
        assert real in block, real
        block = block.replace(real, here)
    local, remote = block.split("with nada.Client(", 1)
    monkeypatch.chdir(tmp_path)
    space: dict = {}
    exec(local, space)
    run, images = space["run"], space["images"]
    assert run.status == "finished" and images.dtype == np.uint8 and images.shape == (8, 8, 8, 3)
    code, _, err = run_in_process(
        monkeypatch,
        capsys,
        "nada-generate",
        str(run.path),
        "--seeds",
        "0-7",
        "--truncation",
        "0.7",
        "--out",
        "pngs",
    )
    assert code == 0, err
    pngs = np.stack([np.asarray(Image.open(tmp_path / "pngs" / f"seed{i:04d}.png")) for i in range(8)])
    assert np.array_equal(pngs, images)
    with served(tmp_path / "triton_models") as server:
        exec("with nada.Client(" + remote.replace("127.0.0.1:8001", server.endpoints.grpc), space)
    assert np.abs(space["served"].astype(int) - images.astype(int)).max() <= 1
