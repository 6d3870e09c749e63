"""Faults a user's machine deals out: kill -9 of nada-train mid-run and of nada-export mid-way."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from nada_export.pipeline import export

pytestmark = pytest.mark.slow


def console(module: str, prog: str, *args: str, env: dict) -> list[str]:
    return [sys.executable, "-c", f"import sys; from {module} import main_entry; sys.argv[0]='{prog}'; main_entry()", *args]


def wait_for(predicate, timeout: float, what: str, poll: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(poll)


def log_steps(run: Path) -> list[int]:
    try:
        return [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
    except (FileNotFoundError, json.JSONDecodeError):
        return []


def test_kill_9_mid_training_then_resume_equals_a_straight_run(tmp_path, rosinality_ckpt, tiny_clip_spec, clip_config_dir):
    env = dict(os.environ, NADA_CLIP_CONFIG_DIR=str(clip_config_dir), OMP_NUM_THREADS="1")
    args = ["--generator", str(rosinality_ckpt), "--target", "sketch", "--clip", tiny_clip_spec, "--iterations", "6",
            "--save-every", "2", "--sample-every", "100", "--n-sample", "2", "--layers", "all", "--quiet", "--device", "cpu"]
    train = ("nada_train.cli.train", "nada-train")
    straight = subprocess.run(console(*train, *args, "--out", str(tmp_path / "straight"), env=env), env=env,
                              capture_output=True, text=True, timeout=300)
    assert straight.returncode == 0, straight.stderr
    killed = tmp_path / "killed"
    proc = subprocess.Popen(console(*train, *args, "--out", str(killed), env=env), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: len(log_steps(killed)) >= 3 or proc.poll() is not None, 300, "step 3")
        proc.send_signal(signal.SIGKILL)  # after a save (step 2), inside or after step 3
        proc.wait(30)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL
    resumed = subprocess.run(console(*train, "--resume", str(killed), "--quiet", env=env), env=env,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert log_steps(killed) == [1, 2, 3, 4, 5, 6]
    a, b = load_file(tmp_path / "straight" / "generator.safetensors"), load_file(killed / "generator.safetensors")
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)


def tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("moment", ["exporting", "writing the repository"])
def test_kill_9_mid_export_leaves_the_repository_as_it_was(tmp_path, three_generators, moment):
    from nada_export.triton_repo import recover_interrupted

    repo = tmp_path / "repo"
    export([str(three_generators[0])], repo, max_batch=2, progress=False)
    before = tree_digest(repo)
    cmd = console("nada_export.cli.export", "nada-export", str(three_generators[1]), str(three_generators[2]),
                  "--repository", str(repo), "--max-batch", "2", env={})
    progress = tmp_path / "progress.txt"
    with progress.open("w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
    try:
        if moment == "exporting":  # its progress bar has moved past the first graph
            wait_for(lambda: "1/4" in progress.read_text() or proc.poll() is not None, 300, "the first graph")
        else:
            # the repository is written in a few milliseconds: watch closely
            wait_for(lambda: any(tmp_path.glob(".repo.staging-*")) or proc.poll() is not None, 300, "the staging folder", poll=0.0005)
        finished_first = proc.poll() is not None
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        proc.kill()
    assert not finished_first, "the export ended before the kill: nothing was tested"
    if any(tmp_path.glob(".repo.staging-*")) or moment == "exporting":
        assert tree_digest(repo) == before
    else:
        # on a loaded machine the kill can land after the commit (the staging folder renamed into
        # place, the old copy not yet removed): then the repository is the new one, whole
        straight = tmp_path / "straight"
        export([str(g) for g in three_generators], straight, max_batch=2, progress=False)
        after = tree_digest(repo)
        assert after.keys() == tree_digest(straight).keys()
        assert all(after[f] == digest for f, digest in before.items() if f not in ("manifest.json", "README.md"))
        shutil.rmtree(straight)
    recover_interrupted(repo)  # what the next export does first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["progress.txt", "repo"]


def test_an_export_killed_between_the_two_renames_is_undone(tmp_path):
    """Killed after moving the old repository aside and before moving the new one in: the next
    export puts the old one back (and drops a leftover old copy where the repository exists)."""
    from nada_export.triton_repo import recover_interrupted

    repo = tmp_path / "repo"
    (repo / "m").mkdir(parents=True)
    (repo / "m" / "config.pbtxt").write_text("x")
    repo.rename(tmp_path / ".repo.old-abc")
    (tmp_path / ".repo.staging-999999999-abc").mkdir()  # no such process
    recover_interrupted(repo)
    assert (repo / "m" / "config.pbtxt").read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo"]


def limited(max_bytes: int):
    """A child whose files cannot grow past max_bytes: writes fail with EFBIG, as on a full disk."""
    import resource

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))
    return apply


def test_a_full_disk_during_export_is_one_line_and_changes_nothing(tmp_path, three_generators):
    repo = tmp_path / "repo"
    export([str(three_generators[0])], repo, max_batch=2, progress=False)
    before = tree_digest(repo)
    cmd = console("nada_export.cli.export", "nada-export", str(three_generators[1]), "--repository", str(repo), "--quiet", env={})
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, preexec_fn=limited(20_000))
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("nada-export: error: the disk is full") and "Traceback" not in r.stderr
    assert tree_digest(repo) == before and sorted(p.name for p in tmp_path.iterdir()) == ["repo"]


def test_a_full_disk_during_training_is_one_line_and_keeps_the_last_save(tmp_path, rosinality_ckpt, tiny_clip_spec, clip_config_dir):
    env = dict(os.environ, NADA_CLIP_CONFIG_DIR=str(clip_config_dir), OMP_NUM_THREADS="1")
    run = tmp_path / "run"
    train = ("nada_train.cli.train", "nada-train")
    first = subprocess.run(console(*train, "--generator", str(rosinality_ckpt), "--target", "sketch", "--clip", tiny_clip_spec,
                                   "--iterations", "2", "--save-every", "2", "--sample-every", "100", "--layers", "all",
                                   "--quiet", "--device", "cpu", "--out", str(run), env=env),
                           env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    before = tree_digest(run)
    size = (run / "generator.safetensors").stat().st_size
    r = subprocess.run(console(*train, "--resume", str(run), "--iterations", "4", "--quiet", env=env), env=env,
                       capture_output=True, text=True, timeout=300, preexec_fn=limited(size // 2))
    assert r.returncode == 1 and r.stderr.strip().splitlines()[-1].startswith("nada-train: error: the disk is full"), r.stderr
    assert "Traceback" not in r.stderr and "generator.safetensors" in r.stderr
    after = tree_digest(run)
    changed = {k for k in before if before[k] != after.get(k)}  # new sample grids may appear
    assert changed <= {"log.jsonl"}, changed  # the log's lines past the save are dropped on resume
    assert not [p for p in run.rglob("*.tmp")]
    resumed = subprocess.run(console(*train, "--resume", str(run), "--iterations", "4", "--quiet", env=env), env=env,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert log_steps(run) == [1, 2, 3, 4]
