"""Several targets in one run (nada_train.many): each target's run equals the run it would be alone,
bit for bit, while the frozen images are computed once a step for all; an interrupted run resumes
every unfinished target; targets spread over two gloo ranks under torchrun give the same runs."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from nada_core.errors import NadaError
from nada_train import loop as loop_module
from nada_train import trainer as trainer_module
from nada_train.loop import train
from nada_train.many import folder_names, parse_targets_file, train_many
from tests.conftest import refused, write_base_checkpoint
from tests.test_trainer import options

TEXTS = ["pencil sketch", "oil painting", "neon"]


def plan(ckpt, out, clip, texts=TEXTS, **kw):
    return [
        options(
            ckpt,
            out / name,
            clip,
            target=text,
            layers="auto",
            iterations=3,
            sample_every=2,
            save_every=2,
            **kw,
        )
        for text, name in zip(texts, folder_names(texts))
    ]


def weights(run: Path) -> dict:
    return load_file(run / "generator.safetensors")


def same_weights(a: Path, b: Path) -> bool:
    """Bit for bit: the same operations on the same shapes in one process."""
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def close_weights(a: Path, b: Path) -> bool:
    """Equal up to float32 sums taken in another order (another process's buffers, another grouping
    of targets: BLAS kernels may differ in their last bits): within 1e-5 of each tensor's largest
    value, about 80 units in the last place; a rank that trained another target, another number of
    steps or another layer set differs by the learning rate's scale (1e-3) and more."""
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all((wa[k] - wb[k]).abs().max() <= 1e-5 * wb[k].abs().max() for k in wa)


@pytest.fixture(scope="module")
def together(tmp_path_factory, tiny_clip_spec) -> tuple[Path, int]:
    """The three targets trained in one run (once per module), and how many frozen forwards it made."""
    calls = {"frozen": 0}
    synthesis = trainer_module.FrozenMemo.synthesis

    def counted(self, g, ws):
        fresh = self.ws is None or not torch.equal(self.ws, ws)
        calls["frozen"] += fresh
        return synthesis(self, g, ws)

    folder = tmp_path_factory.mktemp("together")
    base, out = write_base_checkpoint(folder), folder / "many"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(trainer_module.FrozenMemo, "synthesis", counted)
        train_many(plan(base, out, tiny_clip_spec), out, progress=False)
    return out, calls["frozen"]


def test_targets_together_equal_each_alone_and_share_the_frozen_images(
    tmp_path, rosinality_ckpt, tiny_clip_spec, together
):
    out, frozen_forwards = together
    assert frozen_forwards == 3  # one frozen forward a step for the three targets
    index = json.loads((out / "index.json").read_text())
    assert [(r["target"], r["status"], r["iterations_done"]) for r in index["runs"]] == [
        (t, "finished", 3) for t in TEXTS
    ]
    alone = plan(rosinality_ckpt, tmp_path / "alone", tiny_clip_spec)
    # the first and the last target alone (the last trains after the others have shared every step)
    for opts, name in [pair for i, pair in enumerate(zip(alone, folder_names(TEXTS))) if i != 1]:
        train(opts, progress=False)
        assert same_weights(out / name, Path(opts.out)), opts.target
        assert (out / name / "samples").is_dir() and (out / name / "log.jsonl").exists()
        assert json.loads((out / name / "manifest.json").read_text())["target"] == opts.target
    assert not same_weights(out / "pencil-sketch", out / "neon")


def test_an_interrupted_run_resumes_every_unfinished_target(
    tmp_path, rosinality_ckpt, tiny_clip_spec, monkeypatch, together
):
    out, whole = tmp_path / "cut", together[0]
    advance, steps = loop_module.advance, {"n": 0}

    def interrupted(trainer, bar, callback=None):
        steps["n"] += 1
        if steps["n"] == 5:  # the second round: two targets at 1 iteration, one at 2
            raise KeyboardInterrupt
        advance(trainer, bar, callback)

    monkeypatch.setattr("nada_train.loop.advance", interrupted)
    with pytest.raises(NadaError, match="continue with: nada.resume") as info:
        train_many(plan(rosinality_ckpt, out, tiny_clip_spec), out, progress=False)
    assert info.value.for_command_line().endswith(f"continue with: nada-train --resume {out}")
    index = json.loads((out / "index.json").read_text())
    assert [r["status"] for r in index["runs"]] == ["interrupted"] * 3
    monkeypatch.setattr("nada_train.loop.advance", advance)
    from nada_train.many import read_plan

    train_many(read_plan(out), out, resume=True, progress=False)
    for name in folder_names(TEXTS):
        assert same_weights(out / name, whole / name), name
    assert [r["status"] for r in json.loads((out / "index.json").read_text())["runs"]] == ["finished"] * 3


def test_a_resume_skips_the_finished_target_and_finishes_the_others(
    tmp_path, rosinality_ckpt, tiny_clip_spec, monkeypatch, together
):
    """Targets of 1 and 3 iterations, interrupted when the first has finished: the resume leaves the
    finished one's files as they were and brings the other to its straight run's weights (a target
    trains as it would alone, so the module's three-target run has it). The out folder is nested and
    made beforehand (empty), as a user may."""
    from nada_train.many import PLAN, read_plan

    texts = TEXTS[:2]

    def uneven(out):
        return [
            options(
                rosinality_ckpt,
                out / name,
                tiny_clip_spec,
                target=text,
                layers="auto",
                iterations=n,
                sample_every=2,
                save_every=2,
            )
            for text, name, n in zip(texts, folder_names(texts), (1, 3))
        ]

    out = tmp_path / "a" / "b" / "cut"
    out.mkdir(parents=True)
    advance, steps = loop_module.advance, {"n": 0}

    def interrupted(trainer, bar, callback=None):
        steps["n"] += 1
        if steps["n"] == 3:  # the second round, after the first target finished in the first
            raise KeyboardInterrupt
        advance(trainer, bar, callback)

    monkeypatch.setattr("nada_train.loop.advance", interrupted)
    with pytest.raises(NadaError, match="continue with"):
        train_many(uneven(out), out, progress=False)
    assert json.loads((out / PLAN).read_text())["format"] == "nada-targets/1"
    first = out / folder_names(texts)[0]
    files = {p: p.read_bytes() for p in first.rglob("*") if p.is_file()}
    assert [r["status"] for r in json.loads((out / "index.json").read_text())["runs"]] == [
        "finished",
        "interrupted",
    ]
    monkeypatch.setattr("nada_train.loop.advance", advance)
    import nada_train.many as many

    totals, tqdm, made, make = [], many.tqdm, [], many.make_trainer
    monkeypatch.setattr(many, "tqdm", lambda **kw: totals.append(kw["total"]) or tqdm(**kw))
    monkeypatch.setattr(many, "make_trainer", lambda opts, *a: made.append(opts.out) or make(opts, *a))
    train_many(read_plan(out), out, resume=True, progress=False)
    assert totals == [2]  # the progress bar counts the steps left: the second target's 3 - 1
    assert made == [str(out / folder_names(texts)[1])]  # the finished target is not even loaded
    assert {p: p.read_bytes() for p in first.rglob("*") if p.is_file()} == files
    second = folder_names(texts)[1]
    assert same_weights(out / second, together[0] / second)
    assert [r["status"] for r in json.loads((out / "index.json").read_text())["runs"]] == ["finished"] * 2


def test_the_callback_hears_every_step_and_the_index_follows_each_finished_target(
    tmp_path, rosinality_ckpt, tiny_clip_spec
):
    """A callback hears each step of each target; index.json lists a target as finished as soon as it
    is (not only at the end); a finished target asked for more iterations continues on resume."""
    from nada_train.many import INDEX

    out = tmp_path / "many"
    targets = plan(rosinality_ckpt, out, tiny_clip_spec, texts=TEXTS[:2])
    targets[0].iterations, targets[1].iterations = 1, 3
    heard = []

    def callback(p):
        index = json.loads((out / INDEX).read_text()) if (out / INDEX).exists() else None
        heard.append((p.target, p.step, index and [r["status"] for r in index["runs"]]))

    train_many(targets, out, progress=False, callback=callback)
    assert [(t, s) for t, s, _ in heard] == [(TEXTS[0], 1), (TEXTS[1], 1), (TEXTS[1], 2), (TEXTS[1], 3)]
    assert heard[0][2] is None  # nothing finished yet: no index
    assert heard[1][2] == ["finished", "running"]  # written when the first target finished
    longer = plan(rosinality_ckpt, out, tiny_clip_spec, texts=TEXTS[:2])
    longer[0].iterations, longer[1].iterations = 2, 3
    heard.clear()
    train_many(longer, out, resume=True, progress=False, callback=callback)
    assert [(t, s) for t, s, _ in heard] == [(TEXTS[0], 2)]
    assert (
        json.loads((out / TEXTS[0].replace(" ", "-") / "manifest.json").read_text())["iterations_done"] == 2
    )


def test_a_target_whose_loss_is_nan_fails_alone(tmp_path, rosinality_ckpt, tiny_clip_spec, monkeypatch):
    """One target's loss turns NaN at its first step, another's at its last (after the third has
    finished): both are saved as failed-nan, the third finishes, the index says so, and the error
    names each target and its cause in one line."""
    advance = loop_module.advance

    def nan_for_oil(trainer, bar, callback=None):
        if trainer.opts.target == "oil painting" or (
            trainer.opts.target == "neon" and trainer.iteration == 2
        ):
            raise FloatingPointError(f"loss is nan at iteration {trainer.iteration + 1}")
        advance(trainer, bar, callback)

    monkeypatch.setattr("nada_train.loop.advance", nan_for_oil)
    out = tmp_path / "many"
    with pytest.raises(NadaError) as e:
        train_many(plan(rosinality_ckpt, out, tiny_clip_spec), out, progress=False)
    assert str(e.value) == (
        "2 target(s) failed (the others are saved): oil painting: loss is nan at iteration 1; neon: loss is "
        "nan at iteration 3"
    )
    runs = json.loads((out / "index.json").read_text())["runs"]
    assert [(r["target"], r["status"], r["iterations_done"]) for r in runs] == [
        ("pencil sketch", "finished", 3),
        ("oil painting", "failed-nan", 0),
        ("neon", "failed-nan", 2),
    ]


def test_targets_share_each_clip_they_name(tmp_path, rosinality_ckpt, tiny_clip_spec, monkeypatch):
    """Every target gets the CLIPs its options name, in their order, a CLIP named by several targets
    is loaded for them once (one model object), and their guides share one frozen memo."""
    import nada_train.many as many
    from nada_train.clip import parse_clip_spec
    from tests.conftest import OTHER_CLIP_NAME

    made, make = [], many.make_trainer
    monkeypatch.setattr(many, "make_trainer", lambda *args: made.append(make(*args)) or made[-1])
    clips = [tiny_clip_spec, f"{OTHER_CLIP_NAME}:random"]
    out = tmp_path / "two-clips"
    targets = [
        options(rosinality_ckpt, out / name, tiny_clip_spec, target=text, iterations=2)
        for text, name in zip(TEXTS[:2], folder_names(TEXTS[:2]))
    ]
    for opts in targets:
        opts.clip = [parse_clip_spec(c) for c in clips]
    train_many(targets, out, progress=False)
    assert [(t.opts.target, [str(m.spec) for m in t.guide.models]) for t in made] == [
        (t, clips) for t in TEXTS[:2]
    ]
    assert all(a is b for a, b in zip(made[0].guide.models, made[1].guide.models))
    memo = made[0].guide.frozen_memo  # and one memo of the frozen images and their embeddings for both
    assert memo is not None and made[1].guide.frozen_memo is memo and made[0].frozen_memo is memo


def test_one_target_alone_and_long_names(tmp_path, rosinality_ckpt, tiny_clip_spec):
    out = tmp_path / "not" / "yet" / "one"  # made with its parents
    train_many(plan(rosinality_ckpt, out, tiny_clip_spec, texts=["neon"]), out, progress=False)
    assert json.loads((out / "index.json").read_text())["runs"][0]["status"] == "finished"
    assert folder_names(["a" * 100, "b" * 59 + " c"]) == [
        "a" * 60,
        "b" * 59 + "-",
    ]  # cut at 60 after the dashes are trimmed


def test_targets_file_and_its_errors(tmp_path):
    """Comments from the first # on, blank lines skipped, ITERATIONS a whole number from 1; errors
    name the file and the line (counted from 1) in one whole message."""
    import re

    f = tmp_path / "t.txt"
    f.write_text("# styles\npencil sketch | 300\n\noil painting\nneon|50  # short # really\none | 1\n")
    got = parse_targets_file(f)
    assert [(t.text, t.iterations) for t in got] == [
        ("pencil sketch", 300),
        ("oil painting", None),
        ("neon", 50),
        ("one", 1),
    ]
    assert folder_names(["Pencil Sketch!", "pencil sketch", "???"]) == [
        "pencil-sketch",
        "pencil-sketch-2",
        "target",
    ]
    for text, line in (
        ("sketch | many\n", 1),
        ("ok\n\nsketch | 0\n", 3),
        ("ok\n | 5\n", 2),
        ("ok\nsketch | -2\n", 2),
    ):
        f.write_text(text)
        with refused(
            f"^--targets '{re.escape(str(f))}' line {line}: write TEXT or TEXT \\| ITERATIONS "
            r"\(a positive whole number\)$"
        ):
            parse_targets_file(f)
    f.write_text("# nothing\n")
    with refused(f"^--targets '{re.escape(str(f))}': no targets in it$"):
        parse_targets_file(f)


def test_the_index_lists_every_target_as_it_is_on_disk(tmp_path, rosinality_ckpt, tiny_clip_spec):
    """index.json: a target not started, one interrupted, one finished with its metrics, in the plan's order."""
    from nada_train.many import INDEX, write_index

    out = tmp_path / "many"
    targets = plan(rosinality_ckpt, out, tiny_clip_spec)
    for opts, (status, done) in zip(targets[1:], (("interrupted", 2), ("finished", 3))):
        Path(opts.out).mkdir(parents=True)
        (Path(opts.out) / "manifest.json").write_text(
            json.dumps({"format": "nada-run/1", "status": status, "iterations_done": done})
        )
    (Path(targets[2].out) / "metrics.json").write_text(json.dumps({"target_style_rate": 0.5}))
    index = write_index(out, targets)
    assert (
        index
        == json.loads((out / INDEX).read_text())
        == {
            "format": "nada-runs/1",
            "runs": [
                {
                    "target": "pencil sketch",
                    "path": "pencil-sketch",
                    "iterations": 3,
                    "status": "not started",
                    "iterations_done": 0,
                },
                {
                    "target": "oil painting",
                    "path": "oil-painting",
                    "iterations": 3,
                    "status": "interrupted",
                    "iterations_done": 2,
                },
                {
                    "target": "neon",
                    "path": "neon",
                    "iterations": 3,
                    "status": "finished",
                    "iterations_done": 3,
                    "metrics": {"target_style_rate": 0.5},
                },
            ],
        }
    )


def test_plans_and_folders_that_cannot_be_used_are_refused(tmp_path, rosinality_ckpt, tiny_clip_spec):
    import re

    from nada_train.many import read_plan

    with refused(
        f"^--resume '{re.escape(str(tmp_path))}': no targets.json there; is it a several-target nada-train "
        "directory\\?$"
    ):
        read_plan(tmp_path)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("")
    with refused(
        f"^--out '{re.escape(str(tmp_path / 'taken'))}' exists and is not empty; choose a new directory, or "
        f"continue it with --resume {re.escape(str(tmp_path / 'taken'))}$"
    ):
        train_many(
            plan(rosinality_ckpt, tmp_path / "taken", tiny_clip_spec), tmp_path / "taken", progress=False
        )
    assert [p.name for p in (tmp_path / "taken").iterdir()] == ["x"]


def test_distributed_reads_torchrun_and_starts_the_process_group_once(monkeypatch):
    """Alone: rank 0 of 1, no process group. Under torchrun (WORLD_SIZE 2): gloo without CUDA (NCCL
    with it), started only where it is not yet."""
    import torch.distributed as dist

    from nada_train import many

    started = []
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(dist, "init_process_group", lambda backend: started.append(backend))
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    assert many.distributed() == (0, 1) and started == []
    monkeypatch.setenv("WORLD_SIZE", "2")
    for cuda, initialised, want in ((False, False, ["gloo"]), (True, False, ["nccl"]), (False, True, [])):
        started.clear()
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)  # noqa: B023
        monkeypatch.setattr(dist, "is_initialized", lambda: initialised)  # noqa: B023
        assert many.distributed() == (1, 2) and started == want


def test_nada_train_with_two_targets_on_two_gloo_ranks_equals_one_process(
    tmp_path, rosinality_ckpt, tiny_clip_spec, clip_config_dir
):
    """torchrun --nproc-per-node 2 nada-train: rank 0 trains targets 0 and 2, rank 1 target 1; the
    runs equal those of one process; the index lists all three."""
    script = shutil.which("nada-train") or str(Path(sys.executable).parent / "nada-train")
    args = [
        "--generator",
        str(rosinality_ckpt),
        "--clip",
        tiny_clip_spec,
        "--iterations",
        "2",
        "--n-sample",
        "2",
        "--auto-layer-batch",
        "2",
        "--device",
        "cpu",
        "--quiet",
    ] + [a for t in TEXTS for a in ("--target", t)]
    env = dict(os.environ, NADA_CLIP_CONFIG_DIR=str(clip_config_dir), OMP_NUM_THREADS="1")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            "--no-python",
            script,
            *args,
            "--out",
            str(tmp_path / "ranks"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "done: " in r.stdout and "pencil sketch" in r.stdout
    from nada_train.options import resolve_options  # the plan nada-train makes of those arguments

    given = dict(iterations=2, n_sample=2, auto_layer_batch=2, device="cpu")
    one = [
        resolve_options(
            str(rosinality_ckpt), tmp_path / "one" / name, "photo", t, clip=[tiny_clip_spec], **given
        )
        for t, name in zip(TEXTS, folder_names(TEXTS))
    ]
    threads = torch.get_num_threads()
    # as the ranks ran: the sums' order, and so the last bits, depend on the thread count
    torch.set_num_threads(1)
    try:
        train_many(one, tmp_path / "one", progress=False)
    finally:
        torch.set_num_threads(threads)
    for name in folder_names(TEXTS):  # two processes, targets grouped otherwise: not bit for bit
        assert close_weights(tmp_path / "ranks" / name, tmp_path / "one" / name), name
    assert not close_weights(tmp_path / "ranks" / "neon", tmp_path / "one" / "pencil-sketch")
    runs = json.loads((tmp_path / "ranks" / "index.json").read_text())["runs"]
    assert [(r["target"], r["status"]) for r in runs] == [(t, "finished") for t in TEXTS]
    # one process takes the three further
    r = subprocess.run(
        [script, "--resume", str(tmp_path / "ranks"), "--iterations", "3", "--quiet"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    runs = json.loads((tmp_path / "ranks" / "index.json").read_text())["runs"]
    assert [(r["status"], r["iterations_done"]) for r in runs] == [("finished", 3)] * 3


def test_each_torchrun_rank_takes_a_gpu_of_its_own(monkeypatch):
    from nada_train.many import rank_device

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert rank_device(cpu, 1, 2, gpus=2) == cpu and rank_device(cuda, 0, 1, gpus=2) == cuda
    assert rank_device(cuda, 1, 2, gpus=2) == torch.device("cuda", 1)  # two ranks: a GPU each
    assert [rank_device(cuda, r, 4, gpus=2) for r in range(4)] == [
        torch.device("cuda", i) for i in (0, 1, 0, 1)
    ]
    monkeypatch.setenv("LOCAL_RANK", "1")  # torchrun's rank on this node wins over the global rank
    assert rank_device(cuda, 6, 8, gpus=4) == torch.device("cuda", 1)
