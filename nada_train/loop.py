"""Running trainers to the end: one loop for one target or several (stepped in turn), with the log
line, samples, saves and snapshots of each step, a callback that hears every step (a notebook's or
a web page's progress), Ctrl-C or SIGTERM saving a resumable state, and a target whose loss stops
being finite saved as failed without stopping the others."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from nada_core.errors import FieldError, TrainingInterrupted
from nada_train.factory import build
from nada_train.interrupts import sigterm_as_interrupt
from nada_train.options import TrainOptions
from nada_train.run_dir import RunDir
from nada_train.trainer import Trainer


@dataclass(frozen=True)
class Progress:
    """What a callback hears after each step of each target."""

    run: Path  # the target's run directory
    target: str | None  # its text (None: image-guided)
    step: int  # iterations done
    iterations: int  # the run's total
    loss: float
    clip_losses: list[float]  # the directional (and global) loss per CLIP model
    seconds: float  # this step's time
    sample: Path | None  # the newest sample grid (frozen row above adapted row)


Callback = Callable[[Progress], None]


def advance(trainer: Trainer, bar: tqdm, callback: Callback | None = None) -> None:
    """One step of a run, with its log line, samples, saves and snapshots when they fall due."""
    opts, run = trainer.opts, trainer.run
    record = trainer.step(on_commit=run.log)
    bar.update(1)
    bar.set_postfix(loss=f"{record['loss']:.4f}", s_it=f"{record['seconds']:.2f}")
    done = trainer.iteration == opts.iterations
    if done or trainer.iteration % opts.sample_every == 0:
        trainer.write_samples()
    if trainer.iteration % opts.save_every == 0:
        trainer.save("finished" if done else "running")
        run.save_snapshot(trainer.g_train, trainer.iteration, trainer.base.sha256)
    elif done:
        trainer.save("finished")
    if callback is not None:
        callback(
            Progress(
                run.path,
                opts.target,
                trainer.iteration,
                opts.iterations,
                record["loss"],
                record["clip_losses"],
                record["seconds"],
                trainer.latest_sample,
            )
        )


def run_to_end(
    trainers: list[Trainer],
    bar: tqdm,
    callback: Callback | None = None,
    finished: Callable[[Trainer], None] = lambda trainer: None,
) -> list[tuple[Trainer, FloatingPointError]]:
    """Step the trainers in turn until each has done its iterations; each finished one is judged (a
    built-in base's metrics) and passed to `finished`. One whose loss or gradient is not finite is
    saved as failed-nan and dropped: the failures are returned. Ctrl-C or SIGTERM saves every
    unfinished one as interrupted and raises KeyboardInterrupt."""
    active, failed = list(trainers), []
    try:
        with sigterm_as_interrupt():
            while active:
                for trainer in list(active):
                    if trainer.iteration < trainer.opts.iterations:
                        try:
                            advance(trainer, bar, callback)
                        except FloatingPointError as exc:
                            trainer.save("failed-nan")
                            failed.append((trainer, exc))
                            active.remove(trainer)
                            continue
                    if trainer.iteration >= trainer.opts.iterations:
                        active.remove(trainer)
                        trainer.judge()
                        finished(trainer)
    except KeyboardInterrupt:
        bar.close()
        for trainer in active:
            trainer.save("interrupted")
        raise
    bar.close()
    return failed


def train(
    opts: TrainOptions, resume: bool = False, progress: bool = True, callback: Callback | None = None
) -> Path:
    """Run (or continue) one training run; returns its directory. Ctrl-C saves a resumable state
    (TrainingInterrupted); a loss that is not finite saves the last good state (FieldError)."""
    run = RunDir(opts.out)
    if not resume:
        opts.validate()
        run.check_new()
    trainer = build(opts, run, resume)  # every input is loaded before anything is written
    if not resume:
        trainer.start()
    bar = tqdm(
        total=opts.iterations,
        initial=trainer.iteration,
        disable=not progress,
        unit="it",
        dynamic_ncols=True,
        desc=f"{opts.source} -> {opts.target or Path(opts.target_images).name}",
    )
    try:
        failed = run_to_end([trainer], bar, callback)
    except KeyboardInterrupt:
        raise TrainingInterrupted(str(run.path), trainer.iteration, f"nada.resume('{run.path}')") from None
    if failed:
        raise FieldError(
            f"{failed[0][1]}; the last good state (iteration {trainer.iteration}) is saved in {run.path}; "
            "lower {lr} or use {precision} fp32"
        )
    return run.path
