"""Faults a user's machine deals out: kill -9 of nada-train mid-run and of nada-export mid-way."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from tests.conftest import wait_for


def console(module: str, prog: str, *args: str, env: dict) -> list[str]:
    return [
        sys.executable,
        "-c",
        f"import sys; from {module} import main_entry; sys.argv[0]='{prog}'; main_entry()",
        *args,
    ]


def log_steps(run: Path) -> list[int]:
    try:
        return [
            json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines() if line.strip()
        ]
    except (FileNotFoundError, json.JSONDecodeError):
        return []


def test_kill_9_mid_training_then_resume_equals_a_straight_run(
    tmp_path, rosinality_ckpt, tiny_clip_spec, clip_config_dir
):
    env = dict(os.environ, NADA_CLIP_CONFIG_DIR=str(clip_config_dir), OMP_NUM_THREADS="1")
    args = [
        "--generator",
        str(rosinality_ckpt),
        "--target",
        "sketch",
        "--clip",
        tiny_clip_spec,
        "--iterations",
        "6",
        "--save-every",
        "2",
        "--sample-every",
        "100",
        "--n-sample",
        "2",
        "--layers",
        "all",
        "--quiet",
        "--device",
        "cpu",
    ]
    train = ("nada_train.cli.train", "nada-train")
    straight = subprocess.run(
        console(*train, *args, "--out", str(tmp_path / "straight"), env=env),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert straight.returncode == 0, straight.stderr
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        console(*train, *args, "--out", str(killed), env=env),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: len(log_steps(killed)) >= 3 or proc.poll() is not None, 300, "step 3")
        proc.send_signal(signal.SIGKILL)  # after a save (step 2), inside or after step 3
        proc.wait(30)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL
    resumed = subprocess.run(
        console(*train, "--resume", str(killed), "--quiet", env=env),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert log_steps(killed) == [1, 2, 3, 4, 5, 6]
    a, b = (
        load_file(tmp_path / "straight" / "generator.safetensors"),
        load_file(killed / "generator.safetensors"),
    )
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)


def tree_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_kill_9_mid_export_leaves_the_repository_as_it_was(tmp_path, three_generators, base_repository):
    """nada-export killed while it exports its graphs (its progress bar past the first): the
    repository is byte for byte what it was, and the next export clears what the kill left."""
    from nada_export.triton_repo import recover_interrupted

    repo = tmp_path / "repo"
    shutil.copytree(base_repository, repo)
    before = tree_digest(repo)
    cmd = console(
        "nada_export.cli.export",
        "nada-export",
        str(three_generators[1]),
        str(three_generators[2]),
        "--repository",
        str(repo),
        "--max-batch",
        "2",
        env={},
    )
    progress = tmp_path / "progress.txt"
    with progress.open("w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
    try:
        wait_for(lambda: "1/4" in progress.read_text() or proc.poll() is not None, 300, "the first graph")
        finished_first = proc.poll() is not None
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        proc.kill()
    assert not finished_first, "the export ended before the kill: nothing was tested"
    assert tree_digest(repo) == before
    recover_interrupted(repo)  # what the next export does first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["progress.txt", "repo"]


# Run in a child: write_repository with every step that renames the repository (os.rename, os.replace,
# the exchange) and the removal of the old copy watched; SIGKILL at the chosen moment.
KILL_AT = """
import json, os, signal, shutil, sys
from pathlib import Path
import nada_export.triton_repo as t
moment, repo, specs = sys.argv[1], os.path.abspath(sys.argv[2]), json.loads(sys.argv[3])
state = {"swapped": False}
def die():
    os.kill(os.getpid(), signal.SIGKILL)
def watched(step):
    def run(*paths, **kw):
        if any(os.path.abspath(p) == repo for p in paths):
            if moment == "before the swap":
                die()
            result = step(*paths, **kw)
            state["swapped"] = True
            if moment == "after the swap":
                die()
            return result
        return step(*paths, **kw)
    return run
os.rename, os.replace, t.exchange = watched(os.rename), watched(os.replace), watched(t.exchange)
real_rmtree = shutil.rmtree
def rmtree(path, *args, **kw):
    if moment == "while the old copy is removed" and state["swapped"]:
        files = [p for p in Path(path).rglob("*") if p.is_file()]
        files[0].unlink()  # part of it gone, then the kill
        die()
    return real_rmtree(path, *args, **kw)
shutil.rmtree = rmtree
models = [t.ModelSpec(m["name"], [t.TensorSpec(*i) for i in m["inputs"]], [t.TensorSpec(*o) for o in m["outputs"]],
                      m["max_batch"], Path(m["file"])) for m in specs]
manifest = {"format": "nada-triton-repo/1", "models": {m.name: {} for m in models}}
t.write_repository(Path(repo), models, t.ServeOptions(), manifest)
"""


@pytest.mark.parametrize(
    "moment,whole",
    [("before the swap", "old"), ("after the swap", "new"), ("while the old copy is removed", "new")],
)
def test_a_kill_at_any_step_of_the_swap_leaves_the_old_or_the_new_repository_whole(
    tmp_path, base_repository, moment, whole
):
    """The repository is replaced by one exchange of two directories: killed just before it, the old
    repository is there, whole; killed just after it or while the old copy is being removed, the new
    one; never none (two renames, old aside then new in, leave no repository in between). The next
    export's recovery then leaves nothing beside it."""
    from nada_export.triton_repo import (
        ModelSpec,
        ServeOptions,
        TensorSpec,
        recover_interrupted,
        write_repository,
    )

    repo, straight = tmp_path / "repo", tmp_path / "straight" / "repo"
    shutil.copytree(base_repository, repo)
    shutil.copytree(base_repository, straight)
    onnx = next(base_repository.glob("base_synthesis/1/*.onnx"))
    specs = [
        {
            "name": name,
            "inputs": [["ws", "FP32", [8, 32]]],
            "outputs": [["image", "UINT8", [32, 32, 3]]],
            "max_batch": 2,
            "file": str(onnx),
        }
        for name in ("sketch_synthesis", "neon_synthesis")
    ]
    proc = subprocess.run(
        [sys.executable, "-c", KILL_AT, moment, str(repo), json.dumps(specs)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    models = [
        ModelSpec(
            m["name"], [TensorSpec(*i) for i in m["inputs"]], [TensorSpec(*o) for o in m["outputs"]], 2, onnx
        )
        for m in specs
    ]
    write_repository(
        straight,
        models,
        ServeOptions(),
        {"format": "nada-triton-repo/1", "models": {m.name: {} for m in models}},
    )
    want = {"old": tree_digest(base_repository), "new": tree_digest(straight)}[whole]
    assert tree_digest(repo) == want
    recover_interrupted(repo)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo", "straight"] and tree_digest(repo) == want


def test_the_two_rename_fallback_killed_between_its_renames_is_undone(tmp_path):
    """Where the exchange is not to be had, the old repository goes aside and the new one in: killed
    between the two, the next export puts the old one back and drops the dead export's staging folder."""
    from nada_export.triton_repo import recover_interrupted

    repo = tmp_path / "repo"
    (repo / "m").mkdir(parents=True)
    (repo / "m" / "config.pbtxt").write_text("x")
    repo.rename(tmp_path / ".repo.old-abc")
    (tmp_path / ".repo.staging-999999999-abc").mkdir()  # no such process
    recover_interrupted(repo)
    assert (repo / "m" / "config.pbtxt").read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo"]


def limited(cmd: list[str], max_bytes: int) -> list[str]:
    """`cmd` run so that its files cannot grow past max_bytes: writes fail with EFBIG, as on a full disk.
    A small Python sets the limit and execs the command: a preexec_fn would make subprocess fork this
    process (which holds gRPC), and gRPC's fork handlers can abort the child before its exec
    (grpc/grpc#43055: 'Epoll1Poller encountered epoll_wait error: Bad file descriptor')."""
    shim = (
        "import os, resource, sys; n = int(sys.argv[1]); resource.setrlimit(resource.RLIMIT_FSIZE, (n, n)); "
    )
    shim += "os.execv(sys.argv[2], sys.argv[2:])"
    return [sys.executable, "-c", shim, str(max_bytes), *cmd]


def test_a_full_disk_during_export_is_one_line_and_changes_nothing(
    tmp_path, three_generators, base_repository
):
    repo = tmp_path / "repo"
    shutil.copytree(base_repository, repo)
    before = tree_digest(repo)
    cmd = console(
        "nada_export.cli.export",
        "nada-export",
        str(three_generators[1]),
        "--repository",
        str(repo),
        "--quiet",
        env={},
    )
    r = subprocess.run(limited(cmd, 20_000), capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("nada-export: error: the disk is full") and "Traceback" not in r.stderr
    assert tree_digest(repo) == before and sorted(p.name for p in tmp_path.iterdir()) == ["repo"]


def test_a_full_disk_during_training_is_one_line_and_keeps_the_last_save(
    tmp_path, rosinality_ckpt, tiny_clip_spec, clip_config_dir
):
    env = dict(os.environ, NADA_CLIP_CONFIG_DIR=str(clip_config_dir), OMP_NUM_THREADS="1")
    run = tmp_path / "run"
    train = ("nada_train.cli.train", "nada-train")
    first = subprocess.run(
        console(
            *train,
            "--generator",
            str(rosinality_ckpt),
            "--target",
            "sketch",
            "--clip",
            tiny_clip_spec,
            "--iterations",
            "2",
            "--save-every",
            "2",
            "--sample-every",
            "100",
            "--layers",
            "all",
            "--quiet",
            "--device",
            "cpu",
            "--out",
            str(run),
            env=env,
        ),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert first.returncode == 0, first.stderr
    before = tree_digest(run)
    size = (run / "generator.safetensors").stat().st_size
    r = subprocess.run(
        limited(console(*train, "--resume", str(run), "--iterations", "4", "--quiet", env=env), size // 2),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 1 and r.stderr.strip().splitlines()[-1].startswith(
        "nada-train: error: the disk is full"
    ), r.stderr
    assert "Traceback" not in r.stderr and "generator.safetensors" in r.stderr
    after = tree_digest(run)
    changed = {k for k in before if before[k] != after.get(k)}  # new sample grids may appear
    assert changed <= {"log.jsonl"}, changed  # the log's lines past the save are dropped on resume
    assert not [p for p in run.rglob("*.tmp")]
    resumed = subprocess.run(
        console(*train, "--resume", str(run), "--iterations", "4", "--quiet", env=env),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert log_steps(run) == [1, 2, 3, 4]
